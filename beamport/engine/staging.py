"""A stored job document -> a StagedJob the embedded engine can run, plus warnings for the caller.

What Beam's DataflowRunner staged for a job, and what becomes of it here:
- pipelineUrl (sdkPipelineOptions.options): the pipeline proto. Its Python SDK environments are Docker
  environments (Dataflow starts the SDK container); they are rewritten to run embedded, in this process,
  as is Beam's "default" environment. A Java SDK environment (Beam Java's DataflowRunner, runner v1 and v2
  alike: both stage the portable proto) keeps its place: its dependencies (the staged jars, `url` or `file`
  artifacts) become its class path, each read through the file policy, and the engine runs its transforms
  in a Java SDK harness (engine/java_boot.py) on engines whose SDKs include Java. A Go SDK environment (Beam
  Go's Dataflow runner) keeps its place too: its worker binary (the artifact of Beam's Go worker-binary role)
  is read through the file policy and made executable, and the engine starts it as Beam's Go container does
  (engine/go_boot.py), on engines whose SDKs include Go (Prism). Environments of other SDKs are refused.
- Beam's native Pub/Sub read and write (`beam:transform:pubsub_read:v1`, `pubsub_write:v1`, which Dataflow
  runs itself): replaced by Python transforms (engine/pubsub_staging.py, beamport/io/pubsub.py) that reach
  the server's PUBSUB_EMULATOR_HOST, or Google's Pub/Sub; a read is refused on engines that do not run
  unbounded sources (the embedded one), where it would end having read nothing. They run in the job's Python
  environment; a Go pipeline (Beam Go's pubsubio stages the same URNs and payloads) or a streaming Java one
  (Beam Java's runner stages PubsubIO as them) has none, so staging adds one of Beamport's own for them, as
  rewritten Python environments are (Prism starts its SDK workers through engine/sdk_boot.py, with the
  emulator endpoints). At that boundary the engine carries standard coders both
  SDKs know: pubsubio's read emits bytes (message data, or a serialized PubsubMessage with attributes) and its
  write takes a serialized PubsubMessage as bytes, as Beam Python's do.
- Windowed values carried as element values with a window coder only an SDK knows (Beam Python's Reshuffle on
  non-global windows since 2.65, WriteToBigQuery's among them): made opaque to the engine with a length prefix
  (engine/reshuffle_staging.py), which Prism and Flink otherwise decode wrongly. On Flink, which runs Beam's
  reshuffle URN itself, ReshufflePerKey composites get that URN (their GroupByKey dropped a drain's last window).
- A built-in template's windows whose size is a runtime parameter (Cloud_PubSub_to_GCS_Text's windowDuration):
  made Beam's FixedWindows of the launch's size (engine/window_staging.py), which every engine runs.
- The server's Google service endpoints (STORAGE/PUBSUB/BIGQUERY_EMULATOR_HOST...) go with a Python or Go job in
  an option, for SDK workers that do not inherit the server's environment (beamport/endpoints.py; a Go worker
  reaches BigQuery through the Google API gateway whose address is among them: engine/go_boot.py), with a Beam
  plugin every Python SDK worker imports (beamport/io/emulators_plugin.py): it points Beam's BigQuery clients
  at a BigQuery endpoint, and has Beam's I/O look for credentials once rather than retry for 25 s. A Java job
  gets them as the options Beam Java's IOs read instead (--gcsEndpoint, --bigQueryEndpoint, --pubsubRootUrl;
  endpoints.java_options), unless it set them itself.
- packages (environment.workerPools[].packages):
  - pickled_main_session: loaded before the run, as Dataflow's SDK harness does;
  - a wheel or sdist whose distribution is already installed at that version: nothing to do;
  - a pure-Python wheel: imported from where it was staged (a wheel is a zip sys.path can hold);
  - a source package (an sdist, --setup_file's workflow.tar.gz): built into a wheel for this job, offline
    (staged_files.build_wheel; its setup.py is user code and runs in the executor's sandbox) and used as one if
    it is pure Python; the dependencies it declares that the environment lacks are named in a warning;
  - requirements.txt: each requirement is checked against the installed distributions;
  - anything else (platform wheels, jars, a custom Beam SDK, a source package with compiled code) cannot be
    installed without changing the environment every job shares: a warning says so;
  - submission_environment_dependencies.txt, extra_packages.txt: information only.
  A Java job's packages are its jars, a Go job's its worker binary, which their environments name too: they
  are read from there.
Every file is read through the operator's FilePolicy. The policy also goes to the pipeline: stage_job exports
it to this process's environment (FilePolicy.export; the executor runs one work item per process, and the SDK
harness processes it starts inherit it), where Beamport's built-in templates find it to check each file when
they open it.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Collection
from importlib import metadata
from pathlib import Path

from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from google.protobuf.message import DecodeError

from beamport import endpoints
from beamport.engine import registry
from beamport.engine.base import JOB_TYPE_BATCH, JOB_TYPE_STREAMING, StagedJob
from beamport.engine.pubsub_staging import READ as PUBSUB_READ
from beamport.engine.pubsub_staging import WRITE as PUBSUB_WRITE
from beamport.engine.pubsub_staging import pubsub_reads, replace_pubsub_transforms
from beamport.engine.reshuffle_staging import make_windowed_values_opaque, reshuffle_natively
from beamport.engine.staged_files import (
    BuildFailed,
    build_wheel,
    check_pipeline_hash,
    is_pure_wheel,
    requires_dist,
    unsatisfied_requirements,
)
from beamport.engine.window_staging import resolve_runtime_windows
from beamport.errors import ApiError
from beamport.files import LOCATION_OPTIONS, FilePolicy, gcs_resource_as_url, scheme_of
from beamport.io import bigquery

MAIN_SESSION = "pickled_main_session"
REQUIREMENTS = "requirements.txt"
INFORMATION_ONLY = {"submission_environment_dependencies.txt", "extra_packages.txt"}
# Options only the Dataflow service reads; Beam's option parser would only warn about them.
SERVICE_OPTIONS = {"pipelineUrl", "pipelineProtoHash"}
# Beam's default SDK images: gcr.io/cloud-dataflow/v1beta3/beam_python3.11_sdk:2.77.0, apache/beam_python3.11_sdk:2.77.0
_SDK_IMAGE = re.compile(r"(^|/)beam_python(?P<python>\d+\.\d+)_sdk:(?P<beam>[^@]+)")
_PYTHON_SDK_CAPABILITY = "beam:version:sdk_base:apache/beam_python"
_JAVA_SDK_IMAGE = re.compile(r"(^|/)beam_java\d*_sdk(:|@|$)")
_JAVA_SDK_CAPABILITY = "beam:version:sdk_base:apache/beam_java"
# Beam Go's: gcr.io/cloud-dataflow/v1beta3/beam_go_sdk:2.77.0; beam:version:sdk_base:go:apache/beam_go_sdk:2.77.0
_GO_SDK_IMAGE = re.compile(r"(^|/)beam_go_sdk(:|@|$)")
_GO_SDK_CAPABILITY = "beam:version:sdk_base:go:"
GO_OPTIONS = "beam:option:go_options:v1"  # sdkPipelineOptions' key for a Go program's flags
GO_WORKER_BINARY_ROLE = "beam:artifact:role:go_worker_binary:v1"


def stage_job(
    job: dict,
    policy: FilePolicy,
    workdir: Path | None = None,
    engine: registry.EngineSpec = registry.BATCH_DEFAULT,
    pipeline_bytes: bytes | None = None,
) -> tuple[StagedJob, list[str]]:
    """The job ready to run, and warnings (texts for JOB_MESSAGE_WARNINGs) about what is not honoured.

    job: the job document in Google JSON, as jobs.get with JOB_VIEW_ALL answers it.
    workdir: where files staged on gs:// are copied to (if None, a new temporary directory, left in place:
    the engine reads them during the run).
    engine: the engine that will run it (beamport.engine.registry), for what it cannot do.
    pipeline_bytes: the pipeline as the service kept it when the job was created; None: read pipelineUrl.
    Raises ApiError when the job cannot run at all (no pipeline, a file outside the policy...).
    """
    import apache_beam

    policy.export()  # for the built-in templates' checks where they open files (see above)
    environment = job.get("environment") or {}
    raw_options = (environment.get("sdkPipelineOptions") or {}).get("options") or {}
    warnings: list[str] = []
    fetch = _Fetcher(policy, workdir)

    pipeline_url = raw_options.get("pipelineUrl")
    if not pipeline_url:
        raise ApiError(
            "FAILED_PRECONDITION",
            "The job has no pipeline to run (environment.sdkPipelineOptions.options.pipelineUrl): only jobs "
            "submitted by Beam's DataflowRunner (portable job submission) can run on this Beamport.",
        )
    if pipeline_bytes is None:
        pipeline_bytes = policy.read_bytes(pipeline_url)
        check_pipeline_hash(pipeline_bytes, raw_options)
    try:
        fetch.bytes_read += len(pipeline_bytes)
        pipeline = beam_runner_api_pb2.Pipeline.FromString(pipeline_bytes)
    except DecodeError as exc:
        raise ApiError("INVALID_ARGUMENT", f"{pipeline_url} is not a Beam pipeline proto: {exc}") from None
    # Temp and staging locations are the operator's business too, even though the engine itself only reads.
    for key in LOCATION_OPTIONS:
        if raw_options.get(key):
            policy.check(raw_options[key])

    java = java_environments(pipeline, fetch)
    if java:
        _check_engine_runs(engine, registry.JAVA)
    go = go_environments(pipeline, fetch)
    if go:
        _check_engine_runs(engine, registry.GO)
    rewritten = rewrite_python_environments(pipeline, warnings, keep=set(java) | set(go))
    rewritten += _replace_pubsub(pipeline, rewritten, engine, add_python=bool(go or java))
    make_windowed_values_opaque(pipeline)
    if engine.native_reshuffle:
        reshuffle_natively(pipeline)
    resolve_runtime_windows(pipeline, raw_options)

    submitted_with = (environment.get("userAgent") or {}).get("version")
    if submitted_with and submitted_with != apache_beam.__version__ and not java and not go:
        warnings.append(
            f"The job was submitted with Beam {submitted_with}; this engine runs Beam {apache_beam.__version__}. "
            "Pipelines pickled by one Beam version may not load in another."
        )

    job_type = (environment.get("version") or {}).get("job_type") or JOB_TYPE_BATCH
    if java:  # Beam Java's runner v1 says JAVA_BATCH_AUTOSCALING (or STREAMING_...), v2 FNAPI_BATCH
        job_type = JOB_TYPE_STREAMING if "STREAMING" in job_type.upper() else JOB_TYPE_BATCH
    if job_type == JOB_TYPE_STREAMING and not engine.streaming:
        warnings.append(
            f"This is a streaming job. The {engine.title} engine runs a pipeline until all its input is processed: "
            "bounded sources work, unbounded ones (Pub/Sub, Kafka...) do not."
        )

    main_session, python_path = None, []
    for package in [] if java or go else _packages(environment):
        name, location = package["name"], package["location"]
        if name == MAIN_SESSION:
            main_session = fetch.local_path(location, name)
        elif name == REQUIREMENTS:
            missing = unsatisfied_requirements(fetch.read_text(location))
            if missing:
                warnings.append(
                    f"requirements.txt asks for {', '.join(missing)}, which this engine's Python environment does "
                    "not have; Beamport does not install packages per job. The pipeline runs without them."
                )
        elif name in INFORMATION_ONLY:
            continue
        elif _installed_distribution(name):
            continue  # already here at the staged version (e.g. a requirements.txt package Beam cached)
        elif is_pure_wheel(name):
            python_path.append(str(fetch.local_path(location, name)))
        elif _is_source_package(name):
            wheel = _built_wheel(fetch, location, name, warnings)
            if wheel is not None:
                python_path.append(str(wheel))
        else:
            warnings.append(_not_installed(name, "it is not a pure-Python wheel or a source package"))

    options = {key: _json_number(value) for key, value in raw_options.items() if key not in SERVICE_OPTIONS}
    go_options = (environment.get("sdkPipelineOptions") or {}).get(GO_OPTIONS)
    if go and go_options:
        # Beam Go's runner keeps the program's flags beside `options`; its worker reads them back under the
        # same name from the options the runner provisions (a portable runner's options are beam:option:K:v1).
        options["go_options"] = go_options
    if rewritten or go:
        _reach_emulators(options, plugin=bool(rewritten))
    if java:
        _java_reaches_emulators(options)
    staged = StagedJob(
        job_id=job.get("id", ""),
        job_type=job_type,
        pipeline=pipeline,
        options=options,
        main_session=main_session,
        python_path=python_path,
        rewritten_environments=rewritten,
        java_environments=java,
        go_environments=go,
        staged_bytes=fetch.bytes_read,
    )
    return staged, warnings


def java_environments(pipeline: beam_runner_api_pb2.Pipeline, fetch: _Fetcher) -> dict[str, list[str]]:
    """The pipeline's Java SDK environments that its transforms use, each with its class path: its
    dependencies (the jars Beam Java's runner staged), as local files read through the file policy, in their
    order (the class path's order is the submitter's, as Beam's Java boot keeps it)."""
    used = {t.environment_id for t in pipeline.components.transforms.values() if t.environment_id}
    found = {}
    for env_id, env in pipeline.components.environments.items():
        if env_id in used and _is_java_sdk(env):
            found[env_id] = [str(fetch.local_path(*_artifact_location(env_id, a))) for a in env.dependencies]
    return found


def _check_engine_runs(engine: registry.EngineSpec, sdk: str) -> None:
    """Refuse a pipeline of an SDK its engine does not run, naming the engines that do."""
    if sdk not in engine.sdks:
        title = registry.SDK_TITLES[sdk]
        runs = registry.titles(spec for spec in registry.ENGINES if sdk in spec.sdks)
        raise ApiError(
            "FAILED_PRECONDITION",
            f"This is a Beam {title} pipeline: the {engine.title} engine does not run {title} pipelines; {runs} "
            "runs them (docs/engines.md).",
        )


def go_environments(pipeline: beam_runner_api_pb2.Pipeline, fetch: _Fetcher) -> dict[str, str]:
    """The pipeline's Go SDK environments that its transforms use, each with its worker binary: the artifact
    of Beam's Go worker-binary role (else its only artifact, else the one named "worker", as Beam's Go boot
    chooses), a local executable read through the file policy."""
    used = {t.environment_id for t in pipeline.components.transforms.values() if t.environment_id}
    found = {}
    for env_id, env in pipeline.components.environments.items():
        if env_id not in used or not _is_go_sdk(env):
            continue
        binaries = [a for a in env.dependencies if a.role_urn == GO_WORKER_BINARY_ROLE]
        if not binaries and len(env.dependencies) == 1:
            binaries = list(env.dependencies)
        located = [_artifact_location(env_id, a) for a in binaries or env.dependencies]
        chosen = located[0] if binaries else next((loc for loc in located if loc[1] == "worker"), None)
        if chosen is None:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"The Go environment {env_id} names no worker binary (an artifact of role {GO_WORKER_BINARY_ROLE}): "
                "submit with Beam Go's Dataflow runner and --worker_binary, or let it build one.",
            )
        found[env_id] = str(fetch.executable(chosen[0], f"go-worker-{env_id}"))
    return found


def _artifact_location(env_id: str, artifact: beam_runner_api_pb2.ArtifactInformation) -> tuple[str, str]:
    """Where a dependency was staged, and its name, from its `url` or `file` payload."""
    urns = common_urns.artifact_types
    if artifact.type_urn == urns.URL.urn:
        location = beam_runner_api_pb2.ArtifactUrlPayload.FromString(artifact.type_payload).url
    elif artifact.type_urn == urns.FILE.urn:
        location = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
    else:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"The environment {env_id} depends on an artifact of type {artifact.type_urn}: Beamport reads staged "
            "files (url and file artifacts) only.",
        )
    name = os.path.basename(location)
    if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name or name
    return location, name


def rewrite_python_environments(
    pipeline: beam_runner_api_pb2.Pipeline, warnings: list[str], keep: Collection[str] = ()
) -> list[str]:
    """Make the pipeline's Python SDK environments embedded, in place; return the ids rewritten.

    keep: environments the engine runs otherwise (Java SDK environments), left as they are. Environments of
    other SDKs (cross-language transforms) cannot run here: ApiError FAILED_PRECONDITION.
    """
    docker = common_urns.environments.DOCKER.urn
    used = {t.environment_id for t in pipeline.components.transforms.values() if t.environment_id}
    rewritten = []
    for env_id, env in pipeline.components.environments.items():
        if env.urn == python_urns.EMBEDDED_PYTHON or env_id in keep:
            continue
        image = beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image if env.urn == docker else ""
        # DEFAULT: "whatever the runner runs Python in" (Beam's own protos, without DataflowRunner's rewriting).
        if env.urn == common_urns.environments.DEFAULT.urn or (env.urn == docker and _is_python_sdk(env, image)):
            if image:
                _warn_about_image(image, warnings)
            env.urn, env.payload = python_urns.EMBEDDED_PYTHON, b""
            rewritten.append(env_id)
        elif env_id in used:
            users = sorted(t.unique_name for t in pipeline.components.transforms.values() if t.environment_id == env_id)
            raise ApiError(
                "FAILED_PRECONDITION",
                f"The transforms {', '.join(users[:5])} run in the environment {env_id} ({env.urn} {image}), "
                "which is not Beam's Python SDK: the embedded engine runs Python transforms only "
                "(cross-language transforms are not supported).",
            )
    return rewritten


def _reach_emulators(options: dict, plugin: bool) -> None:
    """The Google service endpoints of this process's environment (the server's emulators) go with the job to
    its SDK workers (beamport/endpoints.py), Python's with a Beam plugin every worker imports at start
    (beamport/io/emulators_plugin.py): it points Beam's BigQuery I/O at a BigQuery endpoint, and spares Beam's
    I/O its 25 s of credential retries. (A Go worker reaches BigQuery through the Google API gateway: go_boot.)"""
    found = endpoints.of(os.environ)
    if not found:
        return
    options[endpoints.OPTION] = found
    if not plugin:
        return
    plugins = options.get("beam_plugins") or []
    if bigquery.PLUGIN not in plugins:
        options["beam_plugins"] = [*plugins, bigquery.PLUGIN]


def _java_reaches_emulators(options: dict) -> None:
    """The server's Google service endpoints go to a Java job's harness as the options Beam Java's IOs build
    their clients from (they ignore the emulator variables): GCS's, BigQuery's and Pub/Sub's root URLs
    (endpoints.java_options). An option the job set itself stays: it names the service the job wants. Credentials
    are the job's own (--credentialFactoryClass): over http, no credentials, or NoopCredentialFactory's, send
    no token, and the emulators ask for none."""
    for name, value in endpoints.java_options(endpoints.of(os.environ)).items():
        if not options.get(name):
            options[name] = value


def _replace_pubsub(
    pipeline: beam_runner_api_pb2.Pipeline, python_environments: list[str], engine, add_python: bool = False
) -> list[str]:
    """Beam's native Pub/Sub transforms -> Python transforms in the job's Python environment
    (engine/pubsub_staging.py); a read only where the engine runs unbounded sources. add_python: a pipeline
    without a Python environment (a Go one) gets one of Beamport's own for them. Answers the ids of the
    environments added."""
    reads = pubsub_reads(pipeline)
    if reads and not engine.streaming:
        streaming = registry.titles(spec for spec in registry.ENGINES if spec.streaming)
        raise ApiError(
            "FAILED_PRECONDITION",
            f"The pipeline reads Pub/Sub ({', '.join(reads)}): the {engine.title} engine runs a pipeline until its "
            f"input ends, and a Pub/Sub read never ends; {streaming} runs it (docs/engines.md).",
        )
    natives = [t for t in pipeline.components.transforms.values() if t.spec.urn in (PUBSUB_READ, PUBSUB_WRITE)]
    if not natives:
        return []
    used = [t.environment_id for t in pipeline.components.transforms.values() if t.environment_id]
    python = next((env for env in used if env in python_environments), None)
    added = []
    if python is None and add_python:
        python = add_python_environment(pipeline)
        added.append(python)
    if python is None:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"The pipeline reads or writes Pub/Sub ({', '.join(sorted(t.unique_name for t in natives))}) "
            "outside a Python, Java or Go pipeline: Beamport runs Pub/Sub I/O for Beam Python, Java and Go "
            "pipelines only.",
        )
    replace_pubsub_transforms(pipeline, python)
    return added


def add_python_environment(pipeline: beam_runner_api_pb2.Pipeline, name: str = "beamport_python") -> str:
    """Add a Python SDK environment of Beamport's own to the pipeline, as rewrite_python_environments makes them
    (engines run it as they run a Python job's), with this Beam's capabilities; answer its id."""
    from apache_beam.transforms.environments import python_sdk_capabilities

    env_id, number = name, 0
    while env_id in pipeline.components.environments:
        number += 1
        env_id = f"{name}{number}"
    env = pipeline.components.environments[env_id]
    env.urn = python_urns.EMBEDDED_PYTHON
    env.capabilities.extend(python_sdk_capabilities())
    return env_id


class _Fetcher:
    """Reads staged files through the policy; gs:// files that must be local are copied to a workdir."""

    def __init__(self, policy: FilePolicy, workdir: Path | None):
        self.policy = policy
        self.workdir = workdir
        self.bytes_read = 0

    def read_text(self, location: str) -> str:
        data = self.policy.read_bytes(location)
        self.bytes_read += len(data)
        return data.decode("utf-8", errors="replace")

    def local_path(self, location: str, name: str) -> Path:
        location = gcs_resource_as_url(location)  # a package's storage.googleapis.com/B/O is gs://B/O
        if scheme_of(location) != "gs":
            path = Path(self.policy.check(location))
            if not path.is_file():
                raise ApiError("NOT_FOUND", f"The staged file {name} ({location}) does not exist.")
            self.bytes_read += path.stat().st_size
            return path
        path = self._workdir() / os.path.basename(name)
        data = self.policy.read_bytes(location)
        self.bytes_read += len(data)
        path.write_bytes(data)
        return path

    def executable(self, location: str, name: str) -> Path:
        """A staged program as a local file this process may run: a local one in place when it is executable
        already, else a copy in the workdir, made executable."""
        path = self.local_path(location, name)
        if path.parent == self.workdir or not os.access(path, os.X_OK):
            if path.parent != self.workdir:
                copy = self._workdir() / os.path.basename(name)
                copy.write_bytes(path.read_bytes())
                path = copy
            path.chmod(0o755)
        return path

    def scratch(self, name: str) -> Path:
        """A directory of the workdir's, for what staging makes (wheels built from source packages)."""
        path = self._workdir() / "scratch" / name
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    def _workdir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="beamport-staged-"))
        return self.workdir


def _packages(environment: dict) -> list[dict]:
    seen, packages = set(), []
    for pool in environment.get("workerPools") or []:
        for package in pool.get("packages") or []:
            if package.get("name") and package.get("location") and package["name"] not in seen:
                seen.add(package["name"])
                packages.append(package)
    return packages


def _is_python_sdk(env: beam_runner_api_pb2.Environment, image: str) -> bool:
    return any(c.startswith(_PYTHON_SDK_CAPABILITY) for c in env.capabilities) or bool(_SDK_IMAGE.search(image))


def _is_java_sdk(env: beam_runner_api_pb2.Environment) -> bool:
    """Beam Java's SDK environment: its capabilities say so, or (an older runner) its Docker image is Beam's
    Java SDK image (gcr.io/cloud-dataflow/v1beta3/beam_java17_sdk:2.73.0, apache/beam_java11_sdk:...)."""
    if any(c.startswith(_JAVA_SDK_CAPABILITY) for c in env.capabilities):
        return True
    if env.urn != common_urns.environments.DOCKER.urn:
        return False
    return bool(_JAVA_SDK_IMAGE.search(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image))


def _is_go_sdk(env: beam_runner_api_pb2.Environment) -> bool:
    """Beam Go's SDK environment: its capabilities or its Docker image say so."""
    if any(c.startswith(_GO_SDK_CAPABILITY) for c in env.capabilities):
        return True
    if env.urn != common_urns.environments.DOCKER.urn:
        return False
    return bool(_GO_SDK_IMAGE.search(beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image))


def _warn_about_image(image: str, warnings: list[str]) -> None:
    import apache_beam

    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    match = _SDK_IMAGE.search(image)
    if not match:
        warnings.append(
            f"The pipeline asked for the container image {image}; the embedded engine does not run containers: "
            f"the pipeline runs in Beamport's own Python {here} environment with Beam {apache_beam.__version__}."
        )
    elif match["python"] != here:
        warnings.append(f"The pipeline was built for Python {match['python']}; the embedded engine runs Python {here}.")


def _installed_distribution(filename: str) -> bool:
    """Whether a staged wheel or sdist names a distribution installed here at the same version."""
    match = re.match(r"^(?P<name>[A-Za-z0-9_.]+?)-(?P<version>[0-9][^-]*?)(\.tar\.gz|\.zip|-.*\.whl)$", filename)
    if not match:
        return False
    try:
        return metadata.version(match["name"]) == match["version"]
    except metadata.PackageNotFoundError:
        return False


def _is_source_package(filename: str) -> bool:
    """An sdist, or the workflow.tar.gz DataflowRunner builds from --setup_file."""
    return filename.endswith((".tar.gz", ".zip"))


def _built_wheel(fetch: _Fetcher, location: str, name: str, warnings: list[str]) -> Path | None:
    """A staged source package built into a wheel for this job, if it builds into a pure-Python one; else None
    and a warning. Dependencies it declares that this environment lacks are named in a warning: nothing is
    downloaded (as for requirements.txt)."""
    source = fetch.local_path(location, name)
    try:
        wheel = build_wheel(source, fetch.scratch("built-" + os.path.basename(name)))  # staged names are unique
    except BuildFailed as exc:
        warnings.append(_not_installed(name, f"it could not be built here (offline, with no build isolation): {exc}"))
        return None
    if not is_pure_wheel(wheel.name):
        warnings.append(_not_installed(name, f"it builds into {wheel.name}, which has compiled code"))
        return None
    missing = unsatisfied_requirements("\n".join(requires_dist(wheel)))
    if missing:
        warnings.append(
            f"The staged package {name} asks for {', '.join(missing)}, which this engine's Python environment "
            "does not have; Beamport does not download packages per job. The pipeline runs without them."
        )
    return wheel


def _not_installed(name: str, why: str) -> str:
    return (
        f"The staged package {name} is not installed: {why}. Jobs run in Beamport's own Python environment, with "
        "the pure-Python wheels they stage (or build from source packages) on their path; install what the "
        "pipeline needs in that environment."
    )


def _json_number(value):
    """Undo JSON's numbers: sdkPipelineOptions is a Struct, so an int option (num_workers=4) comes back 4.0,
    which Beam's int options refuse to parse."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    return value
