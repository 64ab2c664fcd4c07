"""Classic templates: a job described once, launched many times with runtime parameters.

A classic template is the file Beam's DataflowRunner writes with `--template_location`: the job body it
would have sent to jobs.create (pipelineUrl and options in `environment.sdkPipelineOptions`). Its metadata,
when there is some, is the JSON file next to it named `<template>_metadata` (as on Dataflow). Launching one
validates the parameters against the metadata, puts them among the job's options, where the engine gives
them to the pipeline's ValueProvider options (RuntimeValueProvider, as Dataflow's SDK harness does), applies
the RuntimeEnvironment, and creates the job.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import orjson

from beamport import schema
from beamport.errors import ApiError, failed_precondition, invalid_argument, not_found, unimplemented
from beamport.files import FilePolicy
from beamport.service.jobs import JobService
from beamport.service.quotas import check_template_launch
from beamport.service.sdk_version import sdk_language

METADATA_SUFFIX = "_metadata"
# RuntimeEnvironment fields that mean something only on Google's machines: a warning says they are ignored.
_NO_LOCAL_MEANING = (
    "zone",
    "workerRegion",
    "workerZone",
    "machineType",
    "network",
    "subnetwork",
    "serviceAccountEmail",
    "kmsKeyName",
    "ipConfiguration",
    "diskSizeGb",
    "enableStreamingEngine",
    "streamingMode",
    "bypassTempDirValidation",
    "launcherMachineType",
    "flexrsGoal",
    "sdkContainerImage",
    "dumpHeapOnOom",
    "saveHeapDumpsToGcsPath",
    "enableLauncherVmSerialPortLogging",
)


BUILTIN_SCHEME = "builtin://"
# Google's provided templates as users launch them: gs://dataflow-templates[-REGION]/VERSION/NAME, VERSION being
# `latest` or a release (2024-01-01-00_RC00). Those Beamport has (builtin_templates.GOOGLE_PROVIDED) are its
# built-ins of the same name and parameters, whatever the version or region.
_GOOGLE_TEMPLATE = re.compile(r"gs://dataflow-templates(?:-[a-z0-9-]+)?/(?P<version>[^/]+)/(?P<name>.+)")
_GOOGLE_VERSION = re.compile(r"latest|\d{4}-\d{2}-\d{2}-\d{2}_RC\d{2}")
# Built-in templates only their own service starts (it checks what the parameters name): name -> by what.
INTERNAL_TEMPLATES = {"SQL_Query": "sql:query (beamport sql query)"}
# Parameter types that name files: their values must lie under the operator's roots, like any file a
# request names. Read: a file or a pattern (FilePolicy.check_pattern); written: a file or a prefix of files, or a
# folder (FilePolicy.check_output).
_READ_TYPES = ("GCS_READ_FILE", "GCS_READ_FOLDER", "GCS_READ_BUCKET", "JAVASCRIPT_UDF_FILE")
_WRITE_FILE_TYPES = ("GCS_WRITE_FILE",)
_WRITE_FOLDER_TYPES = ("GCS_WRITE_FOLDER", "GCS_WRITE_BUCKET")


class TemplateService:
    def __init__(self, jobs: JobService, files: FilePolicy, builtin_dir: Path | None = None):
        self.jobs = jobs
        self.files = files
        self.builtin_dir = builtin_dir  # where built-in templates are written on first use
        self._builtin_lock = threading.Lock()

    # -- the three methods -------------------------------------------------------------

    def get(self, project_id: str, location: str, gcs_path: str | None, view: str | None) -> dict:
        if view not in (None, "", "METADATA_ONLY"):
            raise invalid_argument(f"Invalid value at 'view', \"{view}\": the only view is METADATA_ONLY.")
        gcs_path = builtin_path(_required_path(gcs_path))
        if gcs_path.startswith(BUILTIN_SCHEME):  # its metadata ships with Beamport: no template file to write
            return {"status": {}, "metadata": self._builtin_metadata(gcs_path), "templateType": "LEGACY"}
        template, metadata = self._load(gcs_path)
        return {
            "status": {},  # google.rpc.Status OK
            "metadata": metadata or _metadata_from_template(template, gcs_path, self._runtime_parameters(template)),
            "templateType": "LEGACY",
        }

    def _runtime_parameters(self, template: dict) -> list[str]:
        """The template's runtime parameters: its pipeline's ValueProvider options, which it lists without a value.
        Beam Python's template lists only those without one; Beam Java's lists every option it did not set, so for
        Java they are those of them its transforms' display data shows as RuntimeValueProviders (read from the
        staged pipeline, in the Beam sidecar)."""
        options = template["environment"]["sdkPipelineOptions"]["options"]
        unset = sorted(name for name, value in options.items() if value is None)
        if sdk_language(template) != "java":
            return unset
        url = options.get("pipelineUrl")
        if not isinstance(url, str) or not url:
            return []
        shown = set(self.jobs.beam.call("runtime_parameters", self.files.read_bytes(url), url))
        return [name for name in unset if name in shown]

    def launch(
        self,
        project_id: str,
        location: str,
        gcs_path: str | None,
        validate_only: bool,
        body: dict,
        dynamic_template: bool = False,
    ) -> dict:
        if dynamic_template:
            raise unimplemented("dynamicTemplate is not implemented: launch a classic template with gcsPath.")
        request = schema.check(body, "LaunchTemplateParameters")
        job, notes = self._job_from_template(
            project_id,
            location,
            gcs_path,
            request.get("jobName"),
            request.get("parameters") or {},
            request.get("environment") or {},
        )
        if validate_only:
            return {}
        replace = None
        if request.get("update"):
            replace = self.jobs.active_job_id(project_id, location, job["name"])
            if replace is None:
                raise failed_precondition(f"update is set, but no active job is named {job['name']!r}.")
            if request.get("transformNameMapping"):
                job["transformNameMapping"] = request["transformNameMapping"]
        return {"job": self.jobs.create_job(project_id, location, job, replace_job_id=replace, notes=notes)}

    def create(self, project_id: str, location: str, body: dict) -> dict:
        request = schema.check(body, "CreateJobFromTemplateRequest")
        job, notes = self._job_from_template(
            project_id,
            location,
            request.get("gcsPath"),
            request.get("jobName"),
            request.get("parameters") or {},
            request.get("environment") or {},
        )
        return self.jobs.create_job(project_id, location, job, notes=notes)

    def launch_internal(self, project_id: str, location: str, name: str, job_name: str, parameters: dict) -> dict:
        """Start a job from one of Beamport's internal built-in templates (for the service that owns it)."""
        job, notes = self._job_from_template(
            project_id, location, BUILTIN_SCHEME + name, job_name, parameters, {}, internal=True
        )
        return self.jobs.create_job(project_id, location, job, notes=notes)

    # -- built-in templates -------------------------------------------------------------------

    def _builtin_metadata(self, gcs_path: str) -> dict:
        """A built-in template's metadata, read from Beamport's own files: describing one needs no template file
        (writing that runs Beam, which took over 30 s on a loaded machine)."""
        from beamport.builtin_templates import TEMPLATES, metadata_path

        name = gcs_path[len(BUILTIN_SCHEME) :]
        if name in INTERNAL_TEMPLATES:
            raise failed_precondition(f"{name} is started by {INTERNAL_TEMPLATES[name]}, not launched directly.")
        _check_builtin(name, TEMPLATES)
        path = str(metadata_path(name))
        return schema.check(_json_object(metadata_path(name).read_bytes(), path), "TemplateMetadata", path)

    def _builtin(self, name: str) -> Path:
        """The template file of a built-in template, written on first use (by DataflowRunner, as any
        classic template is) into the data dir, with its metadata next to it."""
        from beamport.builtin_templates import TEMPLATES, metadata_path

        _check_builtin(name, TEMPLATES)
        if self.builtin_dir is None:
            raise failed_precondition("This server has no directory for built-in templates.")
        template = self.builtin_dir / name
        stamp = Path(f"{template}.version")  # the built-in templates' code it was written from
        with self._builtin_lock:
            stale = not template.exists() or not stamp.exists() or stamp.read_text() != _builtin_version()
            if stale:
                self._write_builtin(name, TEMPLATES[name], template)
            metadata = Path(f"{template}{METADATA_SUFFIX}")
            if stale or not metadata.exists():
                shutil.copyfile(metadata_path(name), metadata)
            if stale:
                stamp.write_text(_builtin_version())
        return template

    def _write_builtin(self, name: str, module: str, template: Path) -> None:
        staging = template.parent / "staging" / name
        staging.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            f"beamport.builtin_templates.{module}",
            "--runner=DataflowRunner",
            "--project=beamport-builtin",
            "--region=us-central1",
            f"--temp_location={staging}",
            f"--staging_location={staging}",
            f"--template_location={template}.tmp",
            "--dataflow_endpoint=http://localhost:1",
            "--no_auth",
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise ApiError("INTERNAL", f"Could not write the built-in template {name}: {done.stderr[-2000:]}")
        os.replace(f"{template}.tmp", template)

    # -- from a template file to a job body ------------------------------------------------

    def _load(self, gcs_path: str, internal: bool = False) -> tuple[dict, dict | None]:
        if gcs_path.startswith(BUILTIN_SCHEME):
            name = gcs_path[len(BUILTIN_SCHEME) :]
            if name in INTERNAL_TEMPLATES and not internal:
                # Its parameters name files the policy must check first: its own service starts it.
                raise failed_precondition(f"{name} is started by {INTERNAL_TEMPLATES[name]}, not launched directly.")
            gcs_path = str(self._builtin(name))
        template = _json_object(self.files.read_bytes(gcs_path), gcs_path)
        environment = template.get("environment")
        options = (
            (environment or {}).get("sdkPipelineOptions", {}).get("options") if isinstance(environment, dict) else None
        )
        if not isinstance(options, dict):
            raise invalid_argument(
                f"{gcs_path} is not a Dataflow template: a template is the job file Beam's DataflowRunner writes "
                "with --template_location (environment.sdkPipelineOptions.options is missing)."
            )
        try:
            raw = self.files.read_bytes(gcs_path + METADATA_SUFFIX)
        except ApiError as exc:
            if exc.status != "NOT_FOUND":
                raise
            return template, None
        metadata = schema.check(
            _json_object(raw, gcs_path + METADATA_SUFFIX), "TemplateMetadata", gcs_path + METADATA_SUFFIX
        )
        return template, metadata

    def _job_from_template(
        self,
        project_id: str,
        location: str,
        gcs_path: str | None,
        job_name: str | None,
        parameters: dict,
        environment: dict,
        internal: bool = False,
    ) -> tuple[dict, list[tuple[str, str]]]:
        """The job body to create, and messages for it (importance, text)."""
        gcs_path = _required_path(gcs_path)
        resolved = builtin_path(gcs_path)
        template, metadata = self._load(resolved, internal)
        if not job_name:
            raise invalid_argument("jobName is required to launch a template.")
        check_template_launch(job_name, parameters, environment.get("additionalUserLabels"))
        options = template["environment"]["sdkPipelineOptions"]["options"]
        check_parameters(parameters, metadata, options)
        parameters = check_path_parameters(self.files, parameters, metadata)
        check_not_overridden(parameters, metadata, environment)
        job = {key: value for key, value in template.items() if key not in ("id", "clientRequestId")}
        job["name"] = job_name
        job_environment = job["environment"]
        options = dict(options)
        # The options a launch sets, named as the template's SDK names them: its harness reads them by that name.
        name_of = _java_option_name if sdk_language(template) == "java" else str
        options.pop(name_of("template_location"), None)  # this job is a launch, not a template
        for name, value in parameters.items():
            # A runtime parameter among the options, where the SDK's harness gives it to the pipeline's
            # ValueProvider (Python's RuntimeValueProvider; Java's reads the provisioned options likewise).
            options[name] = value
        options[name_of("job_name")] = job_name
        if resolved.startswith(BUILTIN_SCHEME):
            # A built-in's file was written for a placeholder project: its jobs run in the launching one (Beam's
            # IOs default to it, e.g. a BigQuery table named without a project).
            options["project"] = project_id
        warnings = _apply_environment(environment, job_environment, options, job, name_of)
        job_environment["sdkPipelineOptions"] = {**job_environment["sdkPipelineOptions"], "options": options}
        given = ", ".join(sorted(parameters)) or "none"
        notes = [("JOB_MESSAGE_BASIC", f"Launched from the template {gcs_path} (parameters: {given}).")]
        if resolved != gcs_path:
            notes.append(
                (
                    "JOB_MESSAGE_BASIC",
                    f"{gcs_path} is Google's provided template of that name: Beamport runs its own built-in "
                    f"{resolved}, with the same parameters (docs/templates.md says what differs).",
                )
            )
        return job, notes + [("JOB_MESSAGE_WARNING", warning) for warning in warnings]


def check_path_parameters(files: FilePolicy, parameters: dict, metadata: dict | None) -> dict:
    """Parameters the metadata types as files or folders must lie under the operator's roots: the job
    will read or write them. Answers the parameters with those values canonical (FilePolicy's answer: real
    directories, no `..`, no file:// URL), which the job must get: what was checked is what is used."""
    checked = dict(parameters)
    for spec in (metadata or {}).get("parameters", []):
        name, kind = spec.get("name"), spec.get("paramType")
        value = parameters.get(name)
        if not value:
            continue
        if kind in _READ_TYPES:
            checked[name] = files.check_pattern(value)
        elif kind in _WRITE_FILE_TYPES:
            checked[name] = files.check_output(value)
        elif kind in _WRITE_FOLDER_TYPES:
            checked[name] = files.check_output(value, folder=True)
    return checked


def check_not_overridden(parameters: dict, metadata: dict | None, environment: dict) -> None:
    """additionalPipelineOptions may not set a template parameter: it would replace the checked value."""
    declared = {p.get("name") for p in (metadata or {}).get("parameters", [])} | set(parameters)
    for name in pipeline_options(environment):
        if name in declared:
            raise invalid_argument(
                f"environment.additionalPipelineOptions sets {name!r}, a parameter of the template: give it in "
                "parameters."
            )


def builtin_path(gcs_path: str) -> str:
    """The built-in template a path to one of Google's provided templates names (builtin://NAME); any
    other path as it is. A Google template Beamport does not provide, or a path that is not one of Google's
    (a version that is none), is refused, saying what there is."""
    found = _GOOGLE_TEMPLATE.fullmatch(gcs_path)
    if found is None:
        return gcs_path
    from beamport.builtin_templates import GOOGLE_PROVIDED

    version, name = found.group("version"), found.group("name")
    if not _GOOGLE_VERSION.fullmatch(version):
        raise not_found(
            f"{gcs_path} is not one of Google's provided templates: their paths are "
            "gs://dataflow-templates[-REGION]/VERSION/NAME, VERSION being latest or a release such as "
            "2024-01-01-00_RC00."
        )
    if name not in GOOGLE_PROVIDED:
        flex = " (a flex template: Beamport runs no Google images)" if name.startswith("flex/") else ""
        raise unimplemented(
            f"Google's template {name}{flex} is not provided by Beamport. Of Google's templates, Beamport runs "
            f"{', '.join(sorted(GOOGLE_PROVIDED))} (its built-ins of the same names and parameters; "
            "docs/templates.md)."
        )
    return BUILTIN_SCHEME + name


def refuse_google_flex_template(spec_path: str) -> None:
    """flexTemplates.launch of Google's flex templates (gs://dataflow-templates/VERSION/flex/NAME): container
    images Beamport does not run. UNIMPLEMENTED, naming the classic template of the same job when it has it."""
    found = _GOOGLE_TEMPLATE.fullmatch(spec_path)
    if found is None or not found.group("name").startswith("flex/"):
        return
    from beamport.builtin_templates import GOOGLE_PROVIDED

    name = found.group("name").removeprefix("flex/")
    classic = name.removesuffix("_Flex")
    instead = (
        f" Launch the classic {classic} instead (templates.launch, gcsPath=gs://dataflow-templates/latest/{classic})."
        if classic in GOOGLE_PROVIDED
        else f" Of Google's templates, Beamport runs the classic {', '.join(sorted(GOOGLE_PROVIDED))}."
    )
    raise unimplemented(f"Google's flex template {name} is a container image, which Beamport does not run.{instead}")


def _check_builtin(name: str, templates) -> None:
    if name not in templates:
        raise not_found(
            f"There is no built-in template {name!r}; the built-in templates are {', '.join(sorted(templates))}."
        )


@functools.lru_cache(maxsize=1)
def _builtin_version() -> str:
    """A digest of the built-in templates' code and metadata, and of Beam's version: a template file written
    from other code (an older Beamport) is written again."""
    import hashlib
    from importlib import metadata as distributions

    import beamport.builtin_templates as package

    digest = hashlib.sha256()
    for path in sorted(Path(package.__file__).parent.iterdir()):
        if path.suffix in (".py", ".json"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        digest.update(distributions.version("apache-beam").encode())
    except distributions.PackageNotFoundError:
        pass
    return digest.hexdigest()


def pipeline_options(environment: dict) -> dict:
    """A runtime environment's additionalPipelineOptions ("name=value" each) as options."""
    options = {}
    for option in environment.get("additionalPipelineOptions", []):
        name, sep, value = option.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise invalid_argument(f"additionalPipelineOptions: {option!r} is not name=value.")
        options[name] = value
    return options


def _json_object(raw: bytes, where: str) -> dict:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_argument(f"{where} is not a Dataflow template: it is not JSON ({exc}).") from None
    if not isinstance(value, dict):
        raise invalid_argument(f"{where} is not a Dataflow template: it is not a JSON object.")
    return value


def _required_path(gcs_path: str | None) -> str:
    if not gcs_path:
        raise invalid_argument("gcsPath is required: the location of the template file.")
    return gcs_path


def _java_option_name(name: str) -> str:
    """Beam Python's name for an option (job_name, temp_location) as Beam Java names it (jobName, tempLocation)."""
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _metadata_from_template(template: dict, gcs_path: str, runtime: list[str]) -> dict:
    """Metadata for a template that has no metadata file: its name, and its runtime parameters."""
    return {
        "name": template.get("name") or gcs_path.rstrip("/").rsplit("/", 1)[-1],
        "parameters": [
            {"name": name, "label": name, "helpText": "A runtime parameter of the pipeline.", "isOptional": True}
            for name in runtime
        ],
    }


def check_parameters(parameters: dict, metadata: dict | None, options: dict | None) -> None:
    """Parameters against the metadata (required, regexes, enum options, unknown names); without metadata,
    a parameter must be one of the pipeline's options (when they are known)."""
    for name, value in parameters.items():
        if not isinstance(value, str):
            raise invalid_argument(f"The template parameter '{name}' must be a string.")
    if metadata is None or "parameters" not in metadata:  # the template does not declare its parameters
        unknown = sorted(set(parameters) - set(options)) if options is not None else []
        if unknown:
            raise invalid_argument(
                f"The template parameters are invalid: '{unknown[0]}' is not a parameter of this template "
                "(not one of its pipeline's options)."
            )
        return
    declared = {p["name"]: p for p in metadata.get("parameters", []) if p.get("name")}
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise invalid_argument(
            f"The template parameters are invalid: '{unknown[0]}' is not a parameter of this template "
            f"(its metadata declares {', '.join(sorted(declared)) or 'none'})."
        )
    for name, spec in declared.items():
        value = parameters.get(name)
        if value is None:
            if not spec.get("isOptional"):
                raise invalid_argument(f"The template parameter '{name}' is required and was not given.")
            continue
        for pattern in spec.get("regexes", []):
            try:
                matched = re.fullmatch(pattern, value)
            except re.error as exc:
                raise failed_precondition(f"The template's metadata has a bad regex for '{name}': {exc}") from None
            if not matched:
                raise invalid_argument(
                    f"The template parameter '{name}' is invalid: {value!r} does not match the regex {pattern!r}."
                )
        choices = [o.get("value") for o in spec.get("enumOptions", [])]
        if spec.get("paramType") == "ENUM" and choices and value not in choices:
            raise invalid_argument(
                f"The template parameter '{name}' is invalid: {value!r} is not one of {', '.join(choices)}."
            )
        if spec.get("paramType") == "NUMBER" and not re.fullmatch(r"-?\d+(\.\d+)?", value):
            raise invalid_argument(f"The template parameter '{name}' is invalid: {value!r} is not a number.")
        if spec.get("paramType") == "BOOLEAN" and value not in ("true", "false"):
            raise invalid_argument(f"The template parameter '{name}' is invalid: {value!r} is not true or false.")


def _apply_environment(
    environment: dict, job_environment: dict, options: dict, job: dict, name_of: Callable[[str], str] = str
) -> list[str]:
    """Apply a RuntimeEnvironment where it means something here; the warnings for the rest. name_of: an option's
    name (Beam Python's) as the template's SDK names it."""
    if environment.get("tempLocation"):
        options[name_of("temp_location")] = environment["tempLocation"]
        job_environment["tempStoragePrefix"] = environment["tempLocation"]
    pools = job_environment.setdefault("workerPools", [{}]) or [{}]
    job_environment["workerPools"] = pools
    if environment.get("numWorkers"):
        pools[0]["numWorkers"] = options[name_of("num_workers")] = environment["numWorkers"]
    if environment.get("maxWorkers"):
        pools[0].setdefault("autoscalingSettings", {})["maxNumWorkers"] = environment["maxWorkers"]
        options[name_of("max_num_workers")] = environment["maxWorkers"]
    if environment.get("additionalExperiments"):
        experiments = list(options.get("experiments") or [])
        experiments += [e for e in environment["additionalExperiments"] if e not in experiments]
        options["experiments"] = experiments
        job_environment["experiments"] = experiments
    if environment.get("additionalUserLabels"):
        job["labels"] = {**(job.get("labels") or {}), **environment["additionalUserLabels"]}
    options.update(pipeline_options(environment))
    return environment_warnings(environment)


def environment_warnings(environment: dict) -> list[str]:
    """Warnings for the runtime environment's fields that have no meaning here."""
    return [
        f"The template's RuntimeEnvironment.{name} has no meaning on Beamport (jobs run on its own workers): "
        "it is ignored."
        for name in _NO_LOCAL_MEANING
        if environment.get(name) not in (None, "", False, 0)
    ]


__all__ = [
    "TemplateService",
    "METADATA_SUFFIX",
    "check_not_overridden",
    "check_parameters",
    "check_path_parameters",
    "environment_warnings",
    "pipeline_options",
]
