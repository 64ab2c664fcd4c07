"""Start a Beam Go job's worker binary for Prism, as Beam's Go container boot program (sdks/go/container/boot.go)
does.

Prism starts a process environment's command with `--id=ID --provision_endpoint=HOST:PORT` (the id in single
quotes, which Beam's boots reject: they are stripped here). Like Beam's Go boot, this asks the provisioning
service for the job's endpoints and options, writes the options to a file (PIPELINE_OPTIONS_FILE, where Beam
Go's worker reads them: the program's flags among them), and becomes the worker binary with
`--worker=true --id --logging_endpoint --control_endpoint --semi_persist_dir`. The binary is already local
(staging read it through the file policy), so nothing is fetched from the artifact service.

The worker stays in the process group of the executor that runs the job (the work item's group, which the
executor kills on cancel) and dies with its parent, Prism (PR_SET_PDEATHSIG): a Go worker outlives a killed
Prism otherwise. `python -m beamport.engine.go_boot --worker_binary=PATH --semi_persist_dir=DIR` and Prism's
flags.
"""

from __future__ import annotations

import os
import sys

from beamport.engine.sdk_boot import boot_arguments, provision_info
from beamport.processes import die_with_parent


def main(argv: list[str]) -> None:
    from google.protobuf import json_format

    prism = os.getppid()
    args = boot_arguments(argv, "worker_binary")
    worker_id = args.id  # Prism's quotes stripped
    info = provision_info(args.provision_endpoint, worker_id)
    logging_endpoint = info.logging_endpoint.url or args.logging_endpoint
    control_endpoint = info.control_endpoint.url or args.control_endpoint
    if not logging_endpoint or not control_endpoint:
        sys.exit(f"go_boot: the runner provisioned no logging or control endpoint for worker {worker_id}")

    workdir = os.path.join(args.semi_persist_dir, f"go-worker-{worker_id}")
    os.makedirs(workdir, exist_ok=True)
    options_file = os.path.join(workdir, "pipeline_options.json")
    with open(options_file, "w") as out:
        out.write(json_format.MessageToJson(info.pipeline_options))
    env = dict(os.environ)
    env["PIPELINE_OPTIONS_FILE"] = options_file
    if info.runner_capabilities:
        env["RUNNER_CAPABILITIES"] = " ".join(info.runner_capabilities)
    if info.status_endpoint.url:
        env["STATUS_ENDPOINT"] = info.status_endpoint.url
    command = [
        args.worker_binary,
        "--worker=true",
        f"--id={worker_id}",
        f"--logging_endpoint={logging_endpoint}",
        f"--control_endpoint={control_endpoint}",
        f"--semi_persist_dir={workdir}",
    ]
    die_with_parent(prism)
    os.chdir(workdir)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
