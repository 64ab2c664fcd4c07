"""Flex templates: a launcher program that builds the pipeline and submits it, started per launch.

On Dataflow a flex template is a container image whose launcher runs the template's program, which
submits the real job with DataflowRunner. Beamport runs no images: it runs the launcher as a local
process, the way Dataflow's Python launcher does (the program named by FLEX_TEMPLATE_PYTHON_PY_FILE, with
the parameters as pipeline options), or its Java one (the class FLEX_TEMPLATE_JAVA_MAIN_CLASS over the jars of
FLEX_TEMPLATE_JAVA_CLASSPATH), pointed back at this service. A YAML template's program is Beam's
own `apache_beam.yaml.main`, given the pipeline from the spec's `metadata.yamlDefinition` and the
parameters as its jinja variables. The launch answers the job the launcher submitted.

The spec file (`containerSpecGcsPath`, or `containerSpec` inline) is Dataflow's: `image`, `sdkInfo`,
`metadata`, `defaultEnvironment`; `beamport templates build-flex` writes one, adding what Beamport needs
to find the program: `beamport.pythonFile` (and `beamport.requirementsFile`), or `beamport.javaMainClass` and
`beamport.javaClassPath`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import orjson
from google.auth import environment_vars  # GOOGLE_APPLICATION_CREDENTIALS

from beamport import schema, wire
from beamport.engine.staged_files import unsatisfied_requirements
from beamport.errors import ApiError, failed_precondition, invalid_argument, unimplemented
from beamport.files import FilePolicy
from beamport.polling import wait_until
from beamport.sandbox import OFF, Sandbox
from beamport.service import model
from beamport.service.iam import ANONYMOUS, IamService, Principal
from beamport.service.jobs import JobService
from beamport.service.quotas import check_template_launch
from beamport.service.templates import (
    check_parameters,
    check_path_parameters,
    environment_warnings,
    pipeline_options,
    refuse_google_flex_template,
)

LAUNCH_TIMEOUT_S = 300.0  # for the launcher to submit its job
# Pipeline options naming where the launcher's DataflowRunner writes before it submits the job.
_WRITTEN_BY_THE_RUNNER = ("temp_location", "staging_location", "gcp_temp_location", "template_location")
LAUNCHER_KEY_S = 3600.0  # how long a launcher may act for its caller


class FlexTemplateService:
    def __init__(
        self,
        jobs: JobService,
        files: FilePolicy,
        endpoint: str,
        work_dir: Path,
        iam: IamService | None = None,
        sandbox: Sandbox | None = None,
        secrets_dir: Path | None = None,
    ):
        self.jobs = jobs
        self.iam = iam
        self.sandbox = sandbox or Sandbox(OFF)  # the launcher is user code
        self.secrets_dir = secrets_dir or work_dir / ".keys"  # launchers' keys, where no job can name them
        self.files = files
        # Beam stages locally and uses REST only when the endpoint's host is "localhost".
        self.endpoint = endpoint.replace("127.0.0.1", "localhost")
        self.work_dir = work_dir

    def launch(self, project_id: str, location: str, body: dict, principal: Principal = ANONYMOUS) -> dict:
        request = schema.check(body, "LaunchFlexTemplateRequest")
        launch = request.get("launchParameter") or {}
        job_name = launch.get("jobName")
        if not job_name:
            raise invalid_argument("launchParameter.jobName is required.")
        if not isinstance(job_name, str) or len(job_name) > model.JOB_NAME_MAX or not model.JOB_NAME_RE.match(job_name):
            # Checked before it names the launcher's directory (DATA_DIR/templates/flex/JOB_NAME-...).
            raise invalid_argument(
                f"Invalid launchParameter.jobName {job_name!r}: lower-case letters, digits and hyphens, starting "
                "with a letter and not ending with a hyphen."
            )
        spec = self._spec(launch)
        parameters = {**(launch.get("launchOptions") or {}), **(launch.get("parameters") or {})}
        check_template_launch(
            job_name,
            parameters,
            (launch.get("environment") or {}).get("additionalUserLabels"),
            prefix="launchParameter.",
        )
        metadata = spec.get("metadata")
        check_parameters(parameters, metadata, options=None)
        parameters = check_path_parameters(self.files, parameters, metadata)
        environment = {**(spec.get("defaultEnvironment") or {}), **(launch.get("environment") or {})}
        self._check_launcher_locations(environment, parameters)
        program = self._program(spec, parameters)
        if request.get("validateOnly"):
            return {}
        return {
            "job": self._run_launcher(project_id, location, job_name, launch, environment, program, spec, principal)
        }

    def _check_launcher_locations(self, environment: dict, parameters: dict) -> None:
        """Where the launcher's DataflowRunner writes (it stages the pipeline before it submits the job, so
        jobs.create would check too late): the environment's temp and staging locations, and the same options
        given as parameters or additionalPipelineOptions. The environment's become canonical."""
        for field in ("tempLocation", "stagingLocation"):
            if environment.get(field):
                environment[field] = self.files.check_output(environment[field], folder=True)
        for options in (parameters, pipeline_options(environment)):
            for name in _WRITTEN_BY_THE_RUNNER:
                if options.get(name):
                    self.files.check_output(options[name], folder=name != "template_location")

    # -- the spec and the program ------------------------------------------------------------

    def _spec(self, launch: dict) -> dict:
        if launch.get("containerSpec") and launch.get("containerSpecGcsPath"):
            raise invalid_argument("Give launchParameter.containerSpec or containerSpecGcsPath, not both.")
        if launch.get("containerSpec"):
            return launch["containerSpec"]  # inline: Dataflow's fields only (no Beamport extension)
        path = launch.get("containerSpecGcsPath")
        if not path:
            raise invalid_argument("launchParameter.containerSpecGcsPath (or containerSpec) is required.")
        refuse_google_flex_template(path)
        try:
            spec = orjson.loads(self.files.read_bytes(path))
        except orjson.JSONDecodeError as exc:
            raise invalid_argument(f"{path} is not a flex template spec: it is not JSON ({exc}).") from None
        if not isinstance(spec, dict):
            raise invalid_argument(f"{path} is not a flex template spec: it has no sdkInfo.")
        checked = schema.check(spec, "ContainerSpec", path)
        if not isinstance(checked.get("sdkInfo"), dict):
            raise invalid_argument(f"{path} is not a flex template spec: it has no sdkInfo.")
        checked["beamport"] = spec.get("beamport") or {}
        return checked

    def _program(self, spec: dict, parameters: dict) -> dict:
        """The launcher's command line and environment, and warnings about the template."""
        language = (spec.get("sdkInfo") or {}).get("language")
        metadata = spec.get("metadata") or {}
        if language == "YAML" or metadata.get("yamlDefinition"):
            if not metadata.get("yamlDefinition"):
                raise invalid_argument("A YAML template's spec needs its pipeline in metadata.yamlDefinition.")
            args = [
                "-m",
                "apache_beam.yaml.main",
                f"--yaml_pipeline={metadata['yamlDefinition']}",
                f"--jinja_variables={json.dumps(parameters)}",
            ]
            return {"args": args, "cwd": None, "env": {}, "options": {}, "warnings": []}
        if language == "JAVA":
            return self._java_program(spec, parameters)
        if language != "PYTHON":
            raise unimplemented(
                "Beamport runs the launchers of Python, Java and YAML flex templates; this one's language is "
                f"{language}."
            )
        extension = spec.get("beamport") or {}
        python_file = extension.get("pythonFile")
        if not python_file:
            raise failed_precondition(
                "Beamport runs a flex template's launcher program itself (it runs no container images): the spec "
                f"names the image {spec.get('image')!r} but not the program. Write the spec with "
                "`beamport templates build-flex ... --py-path main.py`."
            )
        program = Path(self.files.check(python_file))  # the real path: the launcher runs what was checked
        if not program.is_file():
            raise failed_precondition(f"The flex template's program {python_file} does not exist.")
        warnings = []
        requirements = extension.get("requirementsFile")
        env = {"FLEX_TEMPLATE_PYTHON_PY_FILE": str(program)}
        if requirements:
            env["FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE"] = self.files.check(requirements)
            missing = unsatisfied_requirements(self.files.read_bytes(requirements).decode("utf-8", "replace"))
            if missing:
                warnings.append(
                    f"The template's requirements ask for {', '.join(missing)}, which Beamport's Python "
                    "environment does not have; Beamport does not install packages per job."
                )
        return {
            "args": [str(program)],
            "cwd": str(program.parent),
            "env": env,
            "options": parameters,
            "warnings": warnings,
        }

    def _java_program(self, spec: dict, parameters: dict) -> dict:
        """A Java template's launcher: its main class over its jars, as Dataflow's Java launcher image runs
        FLEX_TEMPLATE_JAVA_MAIN_CLASS over FLEX_TEMPLATE_JAVA_CLASSPATH (the spec's `beamport.javaMainClass` and
        `beamport.javaClassPath`), with the parameters as its options."""
        extension = spec.get("beamport") or {}
        main_class, class_path = extension.get("javaMainClass"), extension.get("javaClassPath")
        if not isinstance(main_class, str) or not main_class or not isinstance(class_path, list) or not class_path:
            raise failed_precondition(
                "Beamport runs a flex template's launcher program itself (it runs no container images): the spec "
                f"names the image {spec.get('image')!r} but not the program. Write the spec with `beamport "
                "templates build-flex ... --jar JAR --env FLEX_TEMPLATE_JAVA_MAIN_CLASS=CLASS`."
            )
        jars = []
        for entry in class_path:
            if not isinstance(entry, str):
                raise invalid_argument(f"The flex template's javaClassPath holds {entry!r}, not a path.")
            jar = Path(self.files.check(entry))  # the real path: the launcher runs what was checked
            if not jar.exists():
                raise failed_precondition(f"The flex template's jar {entry} does not exist.")
            jars.append(str(jar))
        from beamport.engine.java_boot import JavaUnavailable, find_java  # not at import: the server's start

        try:
            java = find_java()
        except JavaUnavailable as exc:
            raise failed_precondition(f"This flex template's launcher is a Java program. {exc}") from None
        # C1 alone: the launcher lives seconds, and compiles what it runs at half the CPU (benchmarks/README.md).
        command = [java, "-XX:TieredStopAtLevel=1", "-cp", os.pathsep.join(jars), main_class]
        return {"command": command, "cwd": None, "env": {}, "options": parameters, "warnings": [], "java": True}

    # -- running the launcher -------------------------------------------------------------------

    def _run_launcher(
        self,
        project_id: str,
        location: str,
        job_name: str,
        launch: dict,
        environment: dict,
        program: dict,
        spec: dict,
        principal: Principal,
    ) -> dict:
        run_dir = self.work_dir / f"{job_name}-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(parents=True)
        temp = environment.get("tempLocation") or str(run_dir)
        staging = environment.get("stagingLocation") or str(run_dir)
        runner = {"project": project_id, "region": location, "job_name": job_name}
        runner.update(temp_location=temp, staging_location=staging)
        if program.get("java"):
            options = _java_options(self.endpoint, runner, environment, launch)
        else:
            options = {"runner": "DataflowRunner", "dataflow_endpoint": self.endpoint, "no_auth": True, **runner}
            options.update(_environment_options(environment))
            if launch.get("update"):
                options["update"] = True
                if launch.get("transformNameMappings"):
                    options["transform_name_mapping"] = json.dumps(launch["transformNameMappings"])
        options.update(program["options"])
        env = {k: v for k, v in os.environ.items() if k != environment_vars.CREDENTIALS}
        set_env, files = dict(program["env"]), {}
        launcher_key: tuple[IamService, str, Path] | None = None  # (its service, its id, its file)
        if self.iam is not None and self.iam.enabled and principal is not ANONYMOUS:
            # The launcher submits as the caller: a key of the caller's own account, deleted once it exits.
            key_id, key = self.iam.temporary_key(principal, self.endpoint, LAUNCHER_KEY_S)
            self.secrets_dir.mkdir(parents=True, exist_ok=True)
            key_path = self.secrets_dir / f"launcher-{run_dir.name}.json"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(key, handle)
            inside = "/tmp/beamport-credentials.json" if self.sandbox.enabled else str(key_path)
            files[inside], set_env[environment_vars.CREDENTIALS] = key_path, inside
            options.pop("no_auth", None)
            options.pop("credentialFactoryClass", None)  # Beam Java's default reads that key, as Python's does
            launcher_key = (self.iam, key_id, key_path)
        args = [*(program.get("command") or [sys.executable, *program["args"]]), *_flags(options)]
        cwd = program["cwd"] or str(run_dir)
        log_path = run_dir / "launcher.log"
        started_us = wire.now_us()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                self.sandbox.command(args, set_env, files, cwd),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, **set_env},
                start_new_session=True,
            )

        def reap() -> None:  # whenever it ends (a program that waits for its job runs on until the job ends)
            process.wait()
            if launcher_key is not None:
                iam, key_id, key_path = launcher_key
                iam.drop_temporary_key(principal, key_id)
                key_path.unlink(missing_ok=True)

        threading.Thread(target=reap, name=f"flex-launcher-{job_name}", daemon=True).start()

        def submitted() -> dict | None:
            job = self.jobs.newest_job_named(project_id, location, job_name, started_us)
            if job is None and process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise failed_precondition(
                    f"The flex template's launcher exited with code {process.returncode} without submitting a "
                    f"job:\n{tail}"
                )
            return job

        job = wait_until(submitted, lambda job: job is not None, LAUNCH_TIMEOUT_S, 0.1)
        if job is None:
            process.kill()
            raise ApiError(
                "DEADLINE_EXCEEDED", f"The flex template's launcher submitted no job in {LAUNCH_TIMEOUT_S:g} s."
            )
        notes = [("JOB_MESSAGE_BASIC", f"Launched from a flex template; the launcher's log is {log_path}.")]
        notes += [("JOB_MESSAGE_WARNING", w) for w in program["warnings"] + environment_warnings(environment)]
        self.jobs.add_messages(job["id"], notes)
        return job


# FlexTemplateRuntimeEnvironment fields with a local meaning: their pipeline options in Beam Python, in Beam Java.
_ENVIRONMENT_OPTIONS = {
    "numWorkers": ("num_workers", "numWorkers"),
    "maxWorkers": ("max_num_workers", "maxNumWorkers"),
    "autoscalingAlgorithm": ("autoscaling_algorithm", "autoscalingAlgorithm"),
}


def _environment_options(environment: dict, java: bool = False) -> dict:
    """FlexTemplateRuntimeEnvironment fields with a local meaning, as Beam Python's pipeline options (or Java's)."""
    options: dict = {}
    for field, names in _ENVIRONMENT_OPTIONS.items():
        if environment.get(field):
            value = environment[field]
            options[names[java]] = value.removeprefix("AUTOSCALING_ALGORITHM_") if isinstance(value, str) else value
    experiments, labels = environment.get("additionalExperiments"), environment.get("additionalUserLabels")
    if experiments:
        options["experiments"] = ",".join(experiments) if java else list(experiments)
    if labels:
        options["labels"] = json.dumps(labels) if java else [f"{k}={v}" for k, v in labels.items()]
    options.update(pipeline_options(environment))
    return options


def _java_options(endpoint: str, runner: dict, environment: dict, launch: dict) -> dict:
    """Beam Java's DataflowRunner options for a Java launcher (Java's names), pointed back at this service:
    the flags docs/engines.md's Java pipelines are submitted with."""
    options = {
        "runner": "DataflowRunner",
        "dataflowEndpoint": endpoint,
        "project": runner["project"],
        "region": runner["region"],
        "jobName": runner["job_name"],
        "tempLocation": runner["temp_location"],
        "stagingLocation": runner["staging_location"],
        "pathValidatorClass": "org.apache.beam.sdk.extensions.gcp.storage.NoopPathValidator",
        "credentialFactoryClass": "org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory",
    }
    options.update(_environment_options(environment, java=True))
    if launch.get("update"):
        options["update"] = True
        if launch.get("transformNameMappings"):
            options["transformNameMapping"] = json.dumps(launch["transformNameMappings"])
    return options


def _flags(options: dict) -> list[str]:
    flags = []
    for name, value in options.items():
        if value is True:
            flags.append(f"--{name}")
        elif isinstance(value, list):
            flags += [f"--{name}={item}" for item in value]
        elif value is not None and value is not False:
            flags.append(f"--{name}={value}")
    return flags
