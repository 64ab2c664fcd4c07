"""Start a Python SDK worker for a portable runner (Flink), as Beam's container boot program does.

Beam's SDK worker pool (`beamport.engine.worker_pool --container_executable`) runs this with the endpoints of the
runner's services. Like Beam's Go boot program in its SDK containers, it asks the provisioning service
for the job's pipeline options and hands them to `sdk_worker_main` in its environment, so that the worker
runs with the job's options (log level, pickler, runtime value providers: Beamport's sources read their
drain signal there), then runs that worker in its own process. Under a sandbox (the pool's operator asks for one:
scripts/flink-cluster --sandbox) it first starts itself again inside, so that the job's options and its user code
only ever reach the sandboxed process; the worker is not a second Python, which would import Beam again (about
3 s of each worker's start here). Its output goes to stderr: a pool may pipe stdout and never read it (Beam's
does). The job's name is written to the worker's directory (`job_name`): the worker's command line names only the
worker. A spare (`--spare_dir DIR`: the pool's, started ahead) imports what a worker needs, then reads the
worker's flags from its stdin and becomes that worker, with DIR as its directory.

Also as Beam's boot program does, it fetches the environment's artifacts (what staging made of the job's
packages: pure-Python wheels and the main session, beamport.engine.portable.staged_artifacts) into the
worker's staged directory, where `sdk_worker_main` loads the main session, and puts the wheels on its
PYTHONPATH. The worker's logs go to the Beamport engine that runs the job when the job names its logging
service (the option `beamport_logging_endpoint`, reachable), else to the runner's. The Google service endpoints
the job was staged with (the option `beamport_emulator_endpoints`: the server's emulators) become the worker's
STORAGE/PUBSUB/BIGQUERY_EMULATOR_HOST... (beamport/endpoints.py). A job that names a metric keys file (the
option `beamport_metric_keys_file`: the Flink engine's jobs) has its worker note there which user metrics the
job's steps report (beamport.engine.metric_keys). Options named in camelCase (a template's runtime
parameters, Google's names) come back under their own names from the option `beamport_cased_options`: Beam
Java's job server hands them on in snake_case. The file policy of the executor that submitted the job (the option
`beamport_file_policy`, set by the engine over any the job gave) becomes the worker's BEAMPORT_FILE_POLICY, where
Beamport's built-in templates find it (beamport/files.py).

A worker of a Java or Go environment (the pool's flag `--sdk=java` or `--sdk=go`) goes into the same sandbox, then
becomes a Java SDK harness over the job's staged jars, or the job's Go worker binary (run_java_worker,
run_go_worker). A Java spare (`--sdk=java --spare_dir DIR`) first starts the JVM that DIR's WARM_JVM_FILE describes
(engine/java_warm.py: the pool keeps one warm over the jars of the Java jobs before), then reads its worker's flags
from its stdin; the harness runs in that JVM if the job has all of its jars.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from beamport.engine import beam_protos, portable
from beamport.files import POLICY_VARIABLE

# Set inside the sandbox this program runs itself in (the worker runs in this same process).
SANDBOXED = "BEAMPORT_SDK_BOOT_SANDBOXED"
FETCHES_AT_ONCE = 8  # artifacts fetched at the same time
# The file of the worker's directory that names its job.
JOB_FILE = "job_name"
# The pipeline option naming the Fn API logging service of the Beamport engine that runs the job.
LOGGING_ENDPOINT_OPTION = "beamport_logging_endpoint"
# The pipeline option carrying the job's camelCase options as they were named: Beam Java's job server (Flink's)
# renames every option to snake_case on its way to the SDK workers (inputSubscription -> input_subscription), and
# Python's RuntimeValueProvider looks a template parameter up by its own name.
CASED_OPTIONS = "beamport_cased_options"
# The pipeline option carrying the submitting executor's file policy (FilePolicy.to_json) to the SDK workers.
FILE_POLICY_OPTION = "beamport_file_policy"
# A spare's flag: its directory (beamport.engine.worker_pool), and the flags the pool assigns it then.
SPARE_DIR = "spare_dir"
# The pool's flag for a worker of another SDK ("java": a Java SDK harness, run_java_worker; "go": run_go_worker),
# and the flag this program hands itself, into its sandbox, with Beamport's harness jars found outside it
# (java_boot.harness_jars).
SDK_FLAG = "sdk"
HARNESS_JARS_FLAG = "java_harness_jars"
ASSIGNED = ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint")
# In a Java spare's directory: the JVM it keeps warm (java_warm.start_spec), written by the pool.
WARM_JVM_FILE = "warm-jvm.json"
# In a Java worker's directory: the harness's class path and the rest (run_java_worker), which the pool reads.
JAVA_SPEC_FILE = "java-harness.json"
# What a worker imports before it runs: a spare imports them while it waits.
WORKER_MODULES = (
    "grpc",
    "google.protobuf.json_format",
    "apache_beam.runners.worker.sdk_worker_main",
    "beamport.engine.metric_keys",
    "beamport.endpoints",
)


def cased_options(options: dict) -> dict:
    """The options whose names a snake_case renaming would change, for CASED_OPTIONS."""
    return {name: value for name, value in options.items() if name != name.lower()}


def boot_arguments(argv: list[str], *extra: str) -> argparse.Namespace:
    """The flags a runner starts a boot program with (Beam's container contract), and `extra` ones of ours."""
    parser = argparse.ArgumentParser()
    for name in (*ASSIGNED, *extra):
        parser.add_argument(f"--{name}", default="")
    parser.add_argument("--semi_persist_dir", default="/tmp")
    args, _ = parser.parse_known_args(argv)
    args.id = args.id.strip("'\"")  # Prism passes --id='ID', quotes included
    if refused := bad_worker_id(args.id):
        raise SystemExit(f"sdk_boot: {refused}")
    return args


def worker_directory(semi_persist_dir: str, worker_id: str) -> str:
    """The directory of a worker started without a spare's (`--id`, no `--spare_dir`): its pool removes it."""
    return os.path.join(semi_persist_dir, f"worker-{worker_id}")


def bad_worker_id(worker_id: str) -> str | None:
    """Why a worker id cannot name a worker's directory (`worker-ID`, made outside the sandbox and writable inside
    it), or None. Whoever reaches a pool chooses the id: one with a "/" would name any directory of the host."""
    if "/" in worker_id or "\0" in worker_id:
        return f"the worker id {worker_id!r} has a '/' or a NUL in it: it would name another directory."
    return None


def provision_info(endpoint: str, worker_id: str):
    """What the runner's provisioning service tells this worker: its endpoints, the job's options, artifacts."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        request = beam_provision_api_pb2.GetProvisionInfoRequest()
        return stub.GetProvisionInfo(request, metadata=[("worker_id", worker_id)], timeout=60).info


def main(argv: list[str]) -> None:
    args = boot_arguments(argv, SPARE_DIR, SDK_FLAG, HARNESS_JARS_FLAG)
    java = args.sdk == portable.JAVA_SDK
    if java and not os.environ.get(SANDBOXED):
        from beamport.engine.java_boot import harness_jars

        argv = [*argv, f"--{HARNESS_JARS_FLAG}={os.pathsep.join(harness_jars())}"]  # where this host keeps them
    if args.spare_dir:  # a spare of the pool (beamport.engine.worker_pool): its directory is made already
        semi_persistent = args.spare_dir
    else:
        semi_persistent = worker_directory(args.semi_persist_dir, args.id)
        os.makedirs(semi_persistent, exist_ok=True)
    if not os.environ.get(SANDBOXED):
        sandbox = _sandbox(semi_persistent)
        if sandbox is not None and sandbox.enabled:  # user code: the job's DoFns. This program goes in first.
            itself = [sys.executable, "-m", "beamport.engine.sdk_boot", *argv]
            # A Java spare's sandbox shows, of the jars copied for warm JVMs, its own JVM's only.
            from beamport.engine import java_warm

            warm = warm_jvm_spec(args.spare_dir) if java and args.spare_dir else None
            command = sandbox.command(itself, set_env={SANDBOXED: "1"}, readable=java_warm.jar_paths(warm))
            os.execvpe(command[0], command, os.environ)
    if java or args.sdk == portable.GO_SDK:
        beam_protos.without_sdk()  # this worker is a JVM or a Go binary: Beam's Python SDK is not imported
        if java:
            if args.spare_dir:  # the pool's Java spare: its JVM warmed up, it waits for the worker it is to become
                assigned = java_spare(args, argv)
                if assigned is None:
                    return  # the pool stopped without needing this spare
                argv = assigned
            run_java_worker(args, semi_persistent, argv)
        else:
            run_go_worker(args, semi_persistent)
        return
    if args.spare_dir:
        for module in WORKER_MODULES:  # what makes most of a worker's start, done while it waits
            importlib.import_module(module)
        if not read_assignment(args, sys.stdin):
            return  # the pool stopped without needing this spare
    run_worker(args, semi_persistent)


def read_assignment(args: argparse.Namespace, lines: IO[str]) -> bool:
    """A spare's worker: the flags a worker is started with, as one JSON line from the pool (False: none came)."""
    line = lines.readline()
    if not line.strip():
        return False
    for name, value in json.loads(line).items():
        if name in ASSIGNED:
            setattr(args, name, str(value))
    args.id = args.id.strip("'\"")
    return bool(args.id)


def warm_jvm_spec(spare_dir: str) -> dict | None:
    """The JVM a Java spare's directory says to keep warm (WARM_JVM_FILE, the pool's: java_warm.warm_spec), if any
    (none: a spare started for a worker at once)."""
    try:
        with open(os.path.join(spare_dir, WARM_JVM_FILE)) as spec:
            return json.load(spec)
    except FileNotFoundError:
        return None


def java_spare(args: argparse.Namespace, argv: list[str]) -> list[str] | None:
    """A Java spare of the pool: start the JVM its directory's WARM_JVM_FILE describes (java_warm.start_spec: the
    pool's, over the jars of the Java jobs before), then wait for the worker it is to become; that worker's flags
    (its own, then the ones assigned), or None when the pool stopped without needing it."""
    from beamport.engine import java_warm

    os.dup2(2, 1)  # a pool may pipe stdout and never read it (Beam's does): nothing the JVM says may fill that pipe
    warm = warm_jvm_spec(args.spare_dir)
    if warm is not None:
        java_warm.start_spec(warm, parent=args.spare_dir)  # removed with the spare's directory
    if not read_assignment(args, sys.stdin):
        return None
    return [*argv, *(f"--{name}={getattr(args, name)}" for name in ASSIGNED)]


def run_worker(args: argparse.Namespace, semi_persistent: str) -> None:
    """Provisioned, become the job's SDK worker: in this process, whose Beam is imported already (a second
    Python that imports Beam again took about 3 s more of each worker's start)."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import json_format

    from beamport import endpoints
    from beamport.engine import metric_keys

    info = provision_info(args.provision_endpoint, args.id)
    fetched = fetch_artifacts(info, _descriptor(info.artifact_endpoint, args.artifact_endpoint), semi_persistent)
    wheels = [path for path in fetched if path.endswith(".whl")]
    logging_endpoint = _descriptor(info.logging_endpoint, args.logging_endpoint)
    options = json_format.MessageToDict(info.pipeline_options)
    cased = option(options, CASED_OPTIONS)
    if isinstance(cased, dict):  # back under their own names, beside the renamed copies
        info.pipeline_options.update({f"beam:option:{name}:v1": value for name, value in cased.items()})
    beamport_logs = option(options, LOGGING_ENDPOINT_OPTION)
    if beamport_logs and reachable(beamport_logs):
        logging_endpoint = _descriptor(endpoints_pb2.ApiServiceDescriptor(url=beamport_logs), "")
    env = {}
    # The Google service endpoints the job was staged with (the server's, which this pool may not have: Flink's).
    env.update(endpoints.from_option(option(options, endpoints.OPTION)))
    policy = option(options, FILE_POLICY_OPTION)
    if isinstance(policy, str) and policy:
        env[POLICY_VARIABLE] = policy
    env.update(
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        CONTROL_API_SERVICE_DESCRIPTOR=_descriptor(info.control_endpoint, args.control_endpoint),
        LOGGING_API_SERVICE_DESCRIPTOR=logging_endpoint,
        WORKER_ID=args.id,
        SEMI_PERSISTENT_DIRECTORY=semi_persistent,
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    if wheels:  # imported from where they were staged, here and in any process the worker starts
        sys.path[:0] = wheels
        env["PYTHONPATH"] = os.pathsep.join(
            [*wheels, *([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ else [])]
        )
    os.environ.update(env)
    # Which job this worker's directory is for (its command line names the worker only).
    with open(os.path.join(semi_persistent, JOB_FILE), "w") as out:
        out.write(str(option(options, "job_name") or ""))
    os.dup2(2, 1)
    keys_file = option(options, metric_keys.OPTION)
    if keys_file:  # a Flink job's: the worker notes its user metrics' keys (beamport.engine.metric_keys)
        metric_keys.record_to(keys_file)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main([])


def run_java_worker(args: argparse.Namespace, semi_persistent: str, argv: list[str]) -> None:
    """Become a Java SDK harness for the job (the pool's worker of a Java environment: portable.SDK_PARAM), as
    Beam's Java boot does: the environment's artifacts (the job's staged jars, named in class path order:
    portable.sdk_external_environments) fetched, then the harness started over them and Beamport's harness jars
    by beamport.engine.java_boot, with the rest of what the provisioning service said."""
    from beamport.engine import java_boot

    info = provision_info(args.provision_endpoint, args.id)
    digests: dict[str, str] = {}
    artifacts = _descriptor(info.artifact_endpoint, args.artifact_endpoint)
    jars = sorted(fetch_artifacts(info, artifacts, semi_persistent, digests))
    harness = [path for path in args.java_harness_jars.split(os.pathsep) if path]
    spec = os.path.join(semi_persistent, JAVA_SPEC_FILE)
    with open(spec, "w") as out:
        java = java_boot.find_java()
        # The jars' SHA-256s as they were fetched: a warm JVM's are compared with them (not hashed again).
        json.dump(
            {"class_path": [*harness, *jars], "java": java, "semi_persistent_dir": semi_persistent, "sha256": digests},
            out,
        )
    os.dup2(2, 1)
    java_boot.main([spec, *argv], info, announce=True)


def run_go_worker(args: argparse.Namespace, semi_persistent: str) -> None:
    """Become the job's Go worker (the pool's worker of a Go environment: portable.SDK_PARAM), as Beam's Go boot
    does: the environment's artifact (the worker binary, staged as portable.GO_WORKER) fetched, then run by
    beamport.engine.go_boot with what the provisioning service said."""
    from beamport.engine import go_boot

    info = provision_info(args.provision_endpoint, args.id)
    fetched = fetch_artifacts(info, _descriptor(info.artifact_endpoint, args.artifact_endpoint), semi_persistent)
    binary = next((path for path in fetched if os.path.basename(path) == portable.GO_WORKER), None)
    if binary is None:
        sys.exit(f"sdk_boot: the Go environment of worker {args.id} staged no {portable.GO_WORKER!r} binary")
    os.chmod(binary, 0o755)
    os.dup2(2, 1)
    go_boot.run_in_pool(args, info, binary, semi_persistent)


def _descriptor(provided, url: str) -> str:
    """An endpoint as an ApiServiceDescriptor's text: the one provisioned, else the one the worker's flag gave."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import text_format

    return text_format.MessageToString(provided if provided.url else endpoints_pb2.ApiServiceDescriptor(url=url))


def fetch_artifacts(info, artifact_endpoint: str, semi_persistent: str, digests: dict | None = None) -> list[str]:
    """Fetch the environment's artifacts into SEMI_PERSISTENT_DIRECTORY/staged under their staged names, as
    Beam's boot program does (the main session is loaded from there by sdk_worker_main); answer their paths, and
    put their SHA-256s in `digests` (path -> hex), if given, as they come (java_warm.claim compares them).
    (Beam's Python resolver, artifact_service.resolve_artifacts, would import the whole SDK into a Java or Go
    worker's launcher: beam_protos.)"""
    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import (
        beam_artifact_api_pb2,
        beam_artifact_api_pb2_grpc,
        beam_runner_api_pb2,
        endpoints_pb2,
    )
    from google.protobuf import text_format

    staged = os.path.join(semi_persistent, "staged")
    # A worker directory of the same name may be left from an earlier worker (a pool restarted over the same
    # directory numbers its workers from 1 again): its main session would be loaded as this job's.
    shutil.rmtree(staged, ignore_errors=True)
    if not info.dependencies:
        return []
    os.makedirs(staged, exist_ok=True)
    url = text_format.Parse(artifact_endpoint, endpoints_pb2.ApiServiceDescriptor()).url
    # Beam's resolution leaves URLs and embedded data as they are: Beamport stages files.
    left = {common_urns.artifact_types.URL.urn, common_urns.artifact_types.EMBEDDED.urn}
    with grpc.insecure_channel(url) as channel:
        service = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(channel)
        request = beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=list(info.dependencies))
        wanted = [found for found in service.ResolveArtifacts(request).replacements if found.type_urn not in left]

        def fetch(artifact) -> tuple[str, str]:
            digest = hashlib.sha256()
            with tempfile.NamedTemporaryFile(dir=staged, delete=False) as out:
                for block in service.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact)):
                    out.write(block.data)
                    digest.update(block.data)
            return out.name, digest.hexdigest()

        # Several at once: a Java job's hundreds of jars one after another took 1.5 s, mostly round trips.
        with ThreadPoolExecutor(max_workers=FETCHES_AT_ONCE, thread_name_prefix="fetch") as fetches:
            files = list(fetches.map(fetch, wanted))
    fetched = []
    for artifact, (file, sha256) in zip(wanted, files, strict=True):  # in order: of two of a name, the last stays
        name = file
        if artifact.role_urn == common_urns.artifact_roles.STAGING_TO.urn:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
        name = os.path.join(staged, os.path.basename(name))  # into `staged`, whatever name the service hands over
        os.replace(file, name)
        fetched.append(name)
        if digests is not None:
            digests[name] = sha256
    return fetched


def option(options: dict, name: str):
    """A pipeline option as a job service provisions it: under its name, Beam's URN for it, or "options"."""
    for key in (name, f"beam:option:{name}:v1"):
        if key in options:
            return options[key]
    return (options.get("options") or {}).get(name)


def reachable(address: str) -> bool:
    """Whether a gRPC service answers at `address` now: Beam's SDK worker waits a minute for its logging
    service, then fails, and the engine that named it may be gone (a Flink job another worker adopted)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=5)
        except grpc.FutureTimeoutError:
            return False
    return True


def _sandbox(semi_persistent: str):
    """The sandbox the pool's operator asked for (scripts/flink-cluster --sandbox, --allow-path), as for
    Beamport's own workers (docs/security.md); None when the pool was started without one."""
    mode = os.environ.get("BEAMPORT_SANDBOX")
    if not mode:
        return None
    from beamport.sandbox import Sandbox

    writable = [p for p in os.environ.get("BEAMPORT_SANDBOX_WRITABLE", "").split(os.pathsep) if p]
    hidden = [p for p in os.environ.get("BEAMPORT_SANDBOX_HIDDEN", "").split(os.pathsep) if p]
    shared = os.environ.get("BEAMPORT_FLINK_SHARED_DIR", "/tmp/beamport-flink")
    sandbox = Sandbox(mode, writable=writable, hidden=hidden, shared=[shared], scratch=[semi_persistent])
    sandbox.require()
    return sandbox


if __name__ == "__main__":
    main(sys.argv[1:])
