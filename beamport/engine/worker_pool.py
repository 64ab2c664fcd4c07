"""Beam's external SDK worker pool, listening on loopback only.

Beam's own (`apache_beam.runners.worker.worker_pool_main`) listens on every interface. Whoever reaches it can
ask it to start an SDK worker connected to a control service of their choosing, which then runs whatever
bundles that service sends: user code, as this host's workers. The runners that use a pool (Prism in a
Beamport worker, the Flink cluster's TaskManager) are on the same host, so it listens on loopback only.

`python -m beamport.engine.worker_pool --service_port=PORT --container_executable=BOOT` is the pool that
scripts/flink-cluster starts; the Prism engine starts one in its executor with `start`.

With `--spares N` (the Flink cluster's pool: 1) the pool keeps N workers started ahead, each in its sandbox with
Beam imported (about 3 s of a worker's start here), waiting for the endpoints of the worker it is to become:
a spare takes a StartWorker's place at once, and another is started REPLENISH_AFTER_S later (its import would
take the CPU the job's first bundles need then). A spare is beamport.engine.sdk_boot
with `--spare_dir` (its own directory, as a worker's; the sandbox leaves it, and nothing else of the pool's,
writable) and reads that worker's flags from its stdin (sdk_boot.read_assignment).

A worker of a Java or Go environment (its parameter `beamport_sdk=java` or `go`: portable.sdk_external_environments)
is a Java SDK harness or the job's Go worker binary: the pool starts the same program with `--sdk=java` or
`--sdk=go` (sdk_boot.run_java_worker, run_go_worker), never a spare.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import subprocess
import tempfile
import threading
import time

from beamport.engine import portable, sdk_boot

log = logging.getLogger(__name__)

REPLENISH_AFTER_S = 10.0  # how long after a spare is taken another is started


def start(container_executable: str, port: int = 0, spares: int = 0, spare_root: str | None = None):
    """A pool whose workers start through `container_executable` (one process each), serving on localhost:PORT
    (0: a free port), with `spares` workers started ahead (their directories under `spare_root`), each replaced
    REPLENISH_AFTER_S after it is taken. Returns its address and its gRPC server (stop it when done)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import kill_process_gracefully
    from apache_beam.utils import thread_pool_executor

    # As Beam's start(): no limit on pings without data (a worker's streams stay open and idle for long).
    options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
    address = f"localhost:{server.add_insecure_port(f'localhost:{port}')}"
    pool = _pool_with_spares(container_executable, spares, spare_root)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()

    @atexit.register
    def kill_workers() -> None:
        for process in [*pool._worker_processes.values(), *pool.spares]:
            kill_process_gracefully(process)

    return address, server


def _pool_with_spares(container_executable: str, spares: int, spare_root: str | None):
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    class Pool(BeamFnExternalWorkerPoolServicer):
        def __init__(self) -> None:
            super().__init__(use_process=True, container_executable=container_executable)
            self.spares: list[subprocess.Popen] = []
            self._lock = threading.Lock()
            for _ in range(spares):
                self.spares.append(self._spare())

        def _spare(self) -> subprocess.Popen:
            directory = tempfile.mkdtemp(prefix="spare-", dir=spare_root)
            return subprocess.Popen(
                [container_executable, f"--spare_dir={directory}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # as Beam's pool: never read (the worker writes to stderr)
                close_fds=True,
            )

        def _replenish(self) -> None:
            with self._lock:
                if len(self.spares) < spares:
                    self.spares.append(self._spare())

        def StartWorker(self, request, context):
            sdk = request.params.get(portable.SDK_PARAM)
            if sdk in (portable.JAVA_SDK, portable.GO_SDK):
                return self._start_other_sdk(request, sdk)
            with self._lock:
                spare = None
                while self.spares and spare is None:
                    candidate = self.spares.pop(0)
                    spare = candidate if candidate.poll() is None else None
                if spare is not None:
                    # Later: its import would take the CPU the job's first bundles need now.
                    timer = threading.Timer(REPLENISH_AFTER_S, self._replenish)
                    timer.daemon = True
                    timer.start()
            if spare is None:
                return super().StartWorker(request, context)
            assignment = {"id": request.worker_id, **_endpoints(request)}
            try:
                assert spare.stdin is not None
                spare.stdin.write(json.dumps(assignment).encode() + b"\n")
                spare.stdin.close()
            except OSError:  # it died meanwhile: a worker started cold, as without spares
                return super().StartWorker(request, context)
            log.info("worker %s: a spare (pid %s)", request.worker_id, spare.pid)
            self._worker_processes[request.worker_id] = spare
            return beam_fn_api_pb2.StartWorkerResponse()

        def _start_other_sdk(self, request, sdk: str):
            """A Java SDK harness or a Go worker: the boot program in that SDK's mode (never a spare: those are
            Python workers)."""
            flags = [f"--{name}={url}" for name, url in _endpoints(request).items()]
            command = [container_executable, f"--{sdk_boot.SDK_FLAG}={sdk}", f"--id={request.worker_id}"]
            log.info("worker %s: a %s SDK worker", request.worker_id, sdk)
            # As Beam's pool: stdout piped and never read (the boot program writes to stderr).
            process = subprocess.Popen([*command, *flags], stdout=subprocess.PIPE, close_fds=True)
            self._worker_processes[request.worker_id] = process
            return beam_fn_api_pb2.StartWorkerResponse()

    return Pool()


def _endpoints(request) -> dict[str, str]:
    """The endpoints a StartWorkerRequest gives, by the names of the flags a worker is started with (sdk_boot)."""
    return {name: getattr(request, name).url for name in sdk_boot.ASSIGNED if name != "id"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True, help="the port to serve on, on loopback")
    parser.add_argument("--container_executable", required=True, help="the program that starts one SDK worker")
    parser.add_argument("--spares", type=int, default=0, help="workers kept started ahead (sdk_boot's)")
    parser.add_argument("--spare_root", default=None, help="where spares' directories go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address, server = start(args.container_executable, args.service_port, args.spares, args.spare_root)
    log.info("SDK worker pool at %s, starting workers with %s", address, args.container_executable)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
