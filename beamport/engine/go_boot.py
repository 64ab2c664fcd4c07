"""Start a Beam Go job's worker binary, as Beam's Go container boot program (sdks/go/container/boot.go) does:
for Prism (`main`), for the embedded engine (`main` without Prism's flags), and for Flink's SDK worker pool
(`run_in_pool`, through beamport.engine.sdk_boot).

Prism starts a process environment's command with `--id=ID --provision_endpoint=HOST:PORT` (the id in single
quotes, which Beam's boots reject: they are stripped here). Like Beam's Go boot, this asks the provisioning
service for the job's endpoints and options, writes the options to a file (PIPELINE_OPTIONS_FILE, where Beam
Go's worker reads them: the program's flags among them), and becomes the worker binary with
`--worker=true --id --logging_endpoint --control_endpoint --semi_persist_dir`. The binary is already local
(staging read it through the file policy), so nothing is fetched from the artifact service.

A streaming job's worker talks to Prism through a control relay that truncates its unbounded splittable DoFns once
the job drains (harness_process.Drain: Dataflow's drain of a source of Go's own, such as periodic.Sequence), and
runs as a child of this program; a batch job's worker replaces it. The worker stays in the process group of the
executor that runs the job (the work item's group, which the executor kills on cancel) and dies with its parent
(PR_SET_PDEATHSIG): a Go worker outlives a killed Prism otherwise. `python -m beamport.engine.go_boot
--worker_binary=PATH --semi_persist_dir=DIR` and Prism's flags.

For the embedded engine, FnApiRunner starts a subprocess environment's command (`go_worker_command`) with the
Fn API's endpoints and the job's options in variables (CONTROL_API_SERVICE_DESCRIPTOR, LOGGING_API_SERVICE_DESCRIPTOR,
PIPELINE_OPTIONS, WORKER_ID), as for Python's and Java's harnesses: they become the worker's flags and options
file, and the worker runs as a child of this program (engine/harness_process.py), so that one which fails before
it reached FnApiRunner fails the job saying why, rather than leave the runner waiting for it.

On Flink, the pool's boot program fetched the binary from the job server (sdk_boot.run_go_worker); the worker
runs as a child of this program instead (engine/harness_process.py): its logs go to the Beamport engine's
logging service and its control stream through a relay that notes its user metrics' steps, as a Java harness's
do (truncating its sources of Go's own on drain, as on Prism), and a worker that fails before it reached the runner
fails the job saying why.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from beamport import google_gateway
from beamport.engine import beam_protos, harness_process
from beamport.engine.sdk_boot import boot_arguments, provision_info
from beamport.processes import die_with_parent

# Where Beam Go's worker reads its program's flags in the options (runtime.RawOptionsWrapper).
GO_OPTIONS_KEY = "beam:option:go_options:v1"
# What Beam Go's worker says when the runner has closed its control stream; then it sleeps until it is killed
# (core/runtime/harness/init/init.go), where FnApiRunner waits for its workers to exit.
WORKER_DONE = "Worker exited successfully!"


def go_worker_command(binary: str, semi_persist_dir: Path) -> str:
    """The subprocess environment's command (a shell command line) that runs the Go worker `binary` for
    FnApiRunner, its files under `semi_persist_dir`."""
    command = [sys.executable, "-m", "beamport.engine.go_boot", f"--worker_binary={binary}"]
    return shlex.join([*command, f"--semi_persist_dir={semi_persist_dir}"])


def main(argv: list[str]) -> None:
    args = boot_arguments(argv, "worker_binary")
    if not args.provision_endpoint:
        run_for_fn_api_runner(args)
        return
    prism = os.getppid()
    info = provision_info(args.provision_endpoint, args.id)  # args.id: Prism's quotes stripped
    provided = Provided.of(info)
    logging_endpoint, control_endpoint = _endpoints(info, args)
    drain = _drain_of_streaming(info)
    if drain:
        control_endpoint = harness_process.relay_control(control_endpoint, None, drain)
    command, env = worker_command(
        args.worker_binary, args.id, provided, args.semi_persist_dir, logging_endpoint, control_endpoint
    )
    die_with_parent(prism)
    if not drain:
        os.execve(command[0], command, env)
    harness_process.run(command, env, "The Go worker", control_endpoint, args.id, WORKER_DONE)


def _drain_of_streaming(info) -> harness_process.Drain | None:
    """For a streaming job's worker on Prism: Dataflow's drain of its sources of Go's own (periodic.Sequence, an
    unbounded splittable DoFn), which never see Beamport's drain signal. Its control stream then goes through a
    relay that truncates their remainder once the job's drain file is there (harness_process.Drain, as Java's
    launcher does), and the worker runs as a child of this program. A batch job's worker becomes the binary."""
    from google.protobuf import json_format

    from beamport.engine.sdk_boot import option

    options = json_format.MessageToDict(info.pipeline_options)
    return harness_process.drain_of(options) if option(options, "streaming") in (True, "true") else None


def run_for_fn_api_runner(args: argparse.Namespace) -> None:
    """Run the worker binary for FnApiRunner: its endpoints, id and options from the variables it sets (read
    without Beam's protos: importing apache_beam would cost the job 2.5 s before its worker starts)."""
    worker_id = os.environ.get("WORKER_ID") or "go-worker"
    logs = harness_process.descriptor_url(os.environ.get("LOGGING_API_SERVICE_DESCRIPTOR", ""))
    control = harness_process.descriptor_url(os.environ.get("CONTROL_API_SERVICE_DESCRIPTOR", ""))
    if not logs or not control:
        sys.exit(f"go_boot: the runner gave no logging or control endpoint to worker {worker_id}")
    provided = Provided(options_json=os.environ.pop("PIPELINE_OPTIONS", "{}"))
    os.makedirs(args.semi_persist_dir, exist_ok=True)
    command, env = worker_command(args.worker_binary, worker_id, provided, args.semi_persist_dir, logs, control)
    die_with_parent()  # FnApiRunner's shell, which its executor kills with the job
    harness_process.run(command, env, "The Go worker", control, worker_id, WORKER_DONE)


def run_in_pool(args: argparse.Namespace, info, binary: str, semi_persistent: str) -> None:
    """Run the worker binary for Flink's SDK worker pool, with relays (harness_process) for its logs, to the
    Beamport engine's logging service when the job names one that is reachable, and for its control stream, when
    the job names a metric keys file; exit with its status."""
    from google.protobuf import json_format

    from beamport import endpoints
    from beamport.engine.sdk_boot import option

    options = json_format.MessageToDict(info.pipeline_options)
    # The Google service endpoints the job was staged with (the server's, which this pool may not have).
    os.environ.update(endpoints.from_option(option(options, endpoints.OPTION)))
    # Its sources of Go's own are truncated on drain, as on Prism (above).
    logging_endpoint, control_endpoint = harness_process.relayed(options, *_endpoints(info, args), truncates=True)
    command, env = worker_command(
        binary, args.id, Provided.of(info), semi_persistent, logging_endpoint, control_endpoint
    )
    die_with_parent(os.getppid())  # the pool, or the sandbox it started this program in
    harness_process.run(command, env, "The Go worker", control_endpoint, args.id, WORKER_DONE)


@dataclasses.dataclass(frozen=True)
class Provided:
    """What a Go worker is given besides its endpoints: the job's options (JSON), the runner's capabilities and
    its status endpoint (FnApiRunner gives only the options)."""

    options_json: str
    runner_capabilities: tuple[str, ...] = ()
    status_url: str = ""

    @classmethod
    def of(cls, info) -> Provided:
        """From a ProvisionInfo (Prism's, or Flink's SDK worker pool's provisioning service)."""
        from google.protobuf import json_format

        return cls(
            json_format.MessageToJson(info.pipeline_options), tuple(info.runner_capabilities), info.status_endpoint.url
        )


def worker_command(
    binary: str, worker_id: str, provided: Provided, semi_persist_dir: str, logging_endpoint: str, control_endpoint: str
) -> tuple[list[str], dict[str, str]]:
    """The worker binary's command line and environment, as Beam's Go boot gives them (in its own directory under
    `semi_persist_dir`, which is made, with the job's options in a file there); its working directory is made the
    current one."""
    workdir = os.path.join(semi_persist_dir, f"go-worker-{worker_id}")
    os.makedirs(workdir, exist_ok=True)
    options_file = os.path.join(workdir, "pipeline_options.json")
    with open(options_file, "w") as out:
        out.write(provided.options_json)
    env = dict(os.environ)
    env.update(_through_the_gateway(env, workdir, (logging_endpoint, control_endpoint)))
    env["PIPELINE_OPTIONS_FILE"] = options_file
    if provided.runner_capabilities:
        env["RUNNER_CAPABILITIES"] = " ".join(provided.runner_capabilities)
    if provided.status_url:
        env["STATUS_ENDPOINT"] = provided.status_url
    command = [
        binary,
        "--worker=true",
        f"--id={worker_id}",
        f"--logging_endpoint={logging_endpoint}",
        f"--control_endpoint={control_endpoint}",
        f"--semi_persist_dir={workdir}",
    ]
    os.chdir(workdir)
    return command, env


def _through_the_gateway(env: dict[str, str], workdir: str, runner_endpoints: tuple[str, ...]) -> dict[str, str]:
    """With the server's Google API gateway (serve --emulators bigquery), the variables that send the worker's
    calls of Google's API hosts through it (beamport/google_gateway.py): Beam Go's BigQuery I/O then reaches the
    emulator. The runner's hosts stay out of the proxy (gRPC-Go honours it too). A gateway that does not answer
    is said on stderr (the job's log), and the worker runs without it."""
    gateway = env.get(google_gateway.VARIABLE)
    if not gateway:
        return {}
    hosts = {urlsplit(e if "://" in e else f"//{e}").hostname or "" for e in runner_endpoints}
    try:
        return google_gateway.worker_variables(gateway, workdir, env, sorted(filter(None, hosts)))
    except OSError as exc:
        print(
            f"go_boot: the Google API gateway {gateway} did not answer ({exc}): Google's APIs are called directly",
            file=sys.stderr,
        )
        return {}


def _endpoints(info, args: argparse.Namespace) -> tuple[str, str]:
    """The logging and control endpoints: those provisioned, else the flags'."""
    logging_endpoint = info.logging_endpoint.url or args.logging_endpoint
    control_endpoint = info.control_endpoint.url or args.control_endpoint
    if not logging_endpoint or not control_endpoint:
        sys.exit(f"go_boot: the runner provisioned no logging or control endpoint for worker {args.id}")
    return logging_endpoint, control_endpoint


if __name__ == "__main__":
    beam_protos.without_sdk()  # the harness is a Go binary: of Beam, this program needs its protos only
    main(sys.argv[1:])
