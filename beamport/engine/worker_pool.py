"""Beam's external SDK worker pool, listening on loopback only.

Beam's own (`apache_beam.runners.worker.worker_pool_main`) listens on every interface. Whoever reaches it can
ask it to start an SDK worker connected to a control service of their choosing, which then runs whatever
bundles that service sends: user code, as this host's workers. The runners that use a pool (Prism in a
Beamport worker, the Flink cluster's TaskManager) are on the same host, so it listens on loopback only.

`python -m beamport.engine.worker_pool --service_port=PORT --container_executable=BOOT` is the pool that
scripts/flink-cluster starts; the Prism engine starts one in its executor with `start`.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import time

log = logging.getLogger(__name__)


def start(container_executable: str, port: int = 0):
    """A pool whose workers start through `container_executable` (one process each), serving on localhost:PORT
    (0: a free port). Returns its address and its gRPC server (stop it when done)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer, kill_process_gracefully
    from apache_beam.utils import thread_pool_executor

    # As Beam's start(): no limit on pings without data (a worker's streams stay open and idle for long).
    options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
    address = f"localhost:{server.add_insecure_port(f'localhost:{port}')}"
    pool = BeamFnExternalWorkerPoolServicer(use_process=True, container_executable=container_executable)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()

    @atexit.register
    def kill_workers() -> None:
        for process in list(pool._worker_processes.values()):
            kill_process_gracefully(process)

    return address, server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True, help="the port to serve on, on loopback")
    parser.add_argument("--container_executable", required=True, help="the program that starts one SDK worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address, server = start(args.container_executable, args.service_port)
    log.info("SDK worker pool at %s, starting workers with %s", address, args.container_executable)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
