"""The gRPC server of `beamport serve --grpc-port`: Dataflow's v1beta3 services, beside the REST API, in the same
process and over the same service objects.

A grpc.server with a pool of threads, not grpc.aio on uvicorn's event loop: the service's calls are synchronous
and some wait (a flex template's launcher, a snapshot's savepoint), so each call takes a thread of the pool and
the REST event loop never runs one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from beamport.grpc import jobs, metrics, snapshots, templates
from beamport.grpc.rpc import PACKAGE, Services, handlers

log = logging.getLogger(__name__)

SERVICES = (
    (jobs.JOBS, jobs.JOBS_METHODS),
    (jobs.MESSAGES, jobs.MESSAGES_METHODS),
    (metrics.METRICS, metrics.METRICS_METHODS),
    (snapshots.SNAPSHOTS, snapshots.SNAPSHOTS_METHODS),
    (templates.TEMPLATES, templates.TEMPLATES_METHODS),
    (templates.FLEX_TEMPLATES, templates.FLEX_TEMPLATES_METHODS),
)
THREADS = 16  # calls served at once; more wait for a thread (REST's thread pool has 40, shared by every call)
STOP_GRACE_S = 5.0


class GrpcServer:
    def __init__(self, services: Services, host: str, port: int, max_request_bytes: int):
        self.services = services
        # IPv6 addresses are bracketed in gRPC's host:port form, as in a URL.
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_request_bytes = max_request_bytes
        self._server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(
            ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="grpc"),
            # The same limit on a request as REST's on a body (--max-request-bytes); answers are not limited.
            options=[("grpc.max_receive_message_length", self.max_request_bytes)],
        )
        for service, methods in SERVICES:
            server.add_registered_method_handlers(f"{PACKAGE}.{service}", handlers(service, methods, self.services))
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(f"Cannot serve gRPC on {self.address} (is the port taken?): {exc}") from None
        server.start()
        self._server = server
        log.info("Beamport serving Dataflow's gRPC services (v1beta3) on %s", self.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(STOP_GRACE_S).wait()
            self._server = None
