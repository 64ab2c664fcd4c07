"""Start a Python SDK worker for a portable runner (Flink), as Beam's container boot program does.

Beam's SDK worker pool (`worker_pool_main --container_executable`) runs this with the endpoints of the
runner's services. Like Beam's Go boot program in its SDK containers, it asks the provisioning service
for the job's pipeline options and hands them to `sdk_worker_main` in its environment, so that the worker
runs with the job's options (log level, pickler, runtime value providers: Beamport's sources read their
drain signal there), then becomes that worker. Its output goes to stderr: the pool pipes stdout and
never reads it.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> None:
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
    from google.protobuf import json_format, text_format

    parser = argparse.ArgumentParser()
    for name in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
        parser.add_argument(f"--{name}", default="")
    parser.add_argument("--semi_persist_dir", default="/tmp")
    args, _ = parser.parse_known_args(argv)

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(
                beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)], timeout=60
            )
            .info
        )

    def descriptor(provided, url: str) -> str:
        return text_format.MessageToString(provided if provided.url else endpoints_pb2.ApiServiceDescriptor(url=url))

    semi_persistent = os.path.join(args.semi_persist_dir, f"worker-{args.id}")
    os.makedirs(semi_persistent, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        CONTROL_API_SERVICE_DESCRIPTOR=descriptor(info.control_endpoint, args.control_endpoint),
        LOGGING_API_SERVICE_DESCRIPTOR=descriptor(info.logging_endpoint, args.logging_endpoint),
        WORKER_ID=args.id,
        SEMI_PERSISTENT_DIRECTORY=semi_persistent,
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    os.dup2(2, 1)
    argv = [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"]
    sandbox = _sandbox(semi_persistent)
    if sandbox is not None and sandbox.enabled:  # user code: the job's DoFns
        worker_env = {
            k: env[k]
            for k in (
                "PIPELINE_OPTIONS",
                "CONTROL_API_SERVICE_DESCRIPTOR",
                "WORKER_ID",
                "LOGGING_API_SERVICE_DESCRIPTOR",
                "SEMI_PERSISTENT_DIRECTORY",
                "RUNNER_CAPABILITIES",
            )
        }
        argv = sandbox.command(argv, set_env=worker_env)
    os.execvpe(argv[0], argv, env)


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
    sandbox = Sandbox(mode, writable=[*writable, semi_persistent], hidden=hidden, shared=[shared])
    sandbox.require()
    return sandbox


if __name__ == "__main__":
    main(sys.argv[1:])
