"""Assemble the service from its parts (store, service layer, HTTP layer) and run it under uvicorn."""

from __future__ import annotations

import gc
import logging
import threading
from typing import TYPE_CHECKING

from beamport.config import Settings
from beamport.emulators import METADATA, EmulatorError, Emulators
from beamport.errors import ApiError
from beamport.sandbox import SandboxUnavailable
from beamport.sidecar import BeamSidecar

# Most of the server's modules are imported in build_app(), once serve() has started the Beam sidecar: its
# import of Beam and theirs then run at once, on two cores, and the first create waits less.
if TYPE_CHECKING:
    from beamport.service.snapshots import SnapshotService
    from beamport.service.workers import WorkerRegistry

log = logging.getLogger("beamport")

SWEEP_EVERY_S = 1.0
EXPIRE_SNAPSHOTS_EVERY = 10  # sweeps
# The local workers start once the Beam sidecar is ready, or this long after start-up at most (below).
WORKERS_AFTER_BEAM_S = 30.0


def _freeze_start_up_heap() -> None:
    """Take what start-up loaded (modules, the app) out of the garbage collector's full collections, which would
    otherwise walk it again each time while holding the GIL, a pause every request in flight waits out. (No
    collection first: start-up leaves next to no garbage, and a full collection would delay the first answer.)"""
    gc.freeze()
    # A list answer allocates thousands of short-lived objects: collect the young generation less often.
    gc.set_threshold(20_000, 20, 20)


class StartAfter:
    """Starts something in the background once `wait(timeout)` returns, and stops it at shutdown if it started
    by then (shutdown may come first: then it never starts)."""

    def __init__(self, start, stop, wait, timeout_s: float):
        self._start, self._stop, self._wait, self.timeout_s = start, stop, wait, timeout_s
        self._lock = threading.Lock()
        self._started = self._stopped = False

    def start(self) -> None:
        threading.Thread(target=self._start_when_ready, name="start-after", daemon=True).start()

    def _start_when_ready(self) -> None:
        self._wait(self.timeout_s)
        with self._lock:
            if not self._stopped:
                self._start()
                self._started = True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._started:
                self._stop()


class Sweeper:
    """The service's own clock: abandons lost workers and expired leases, whoever runs the workers; deletes
    expired snapshots."""

    def __init__(
        self,
        registry: WorkerRegistry,
        every_s: float = SWEEP_EVERY_S,
        snapshots: SnapshotService | None = None,
        check_database=None,
    ):
        self.registry = registry
        self.every_s = every_s
        self.snapshots = snapshots
        # The store's check that its database is still there (SQLite: the file not deleted), asked every sweep
        # so that the server notices even while nothing is written.
        self.check_database = check_database
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        from beamport import wire

        sweeps = 0
        while not self._stop.wait(self.every_s):
            if self.check_database is not None:
                try:
                    self.check_database()
                except ApiError:  # the database is gone (the store said so, once): nothing to sweep any more
                    continue
            try:
                self.registry.sweep()
            except Exception:  # a database hiccup must not stop the sweeps to come
                log.exception("sweep failed")
            sweeps += 1
            if self.snapshots is not None and sweeps % EXPIRE_SNAPSHOTS_EVERY == 0:
                try:
                    self.snapshots.expire(wire.now_us())
                except Exception:
                    log.exception("expiring snapshots failed")


def build_app(
    settings: Settings, with_workers: bool = True, beam: BeamSidecar | None = None, emulators: Emulators | None = None
):
    """The ASGI app. `beam`: the Beam sidecar, when serve() has started it (else it starts with the app);
    `emulators`: the ones serve() started, stopped with the app, after its workers."""
    from beamport.engine.registry import state_control
    from beamport.files import FilePolicy
    from beamport.http.app import create_app
    from beamport.service.execution_details import ExecutionDetails
    from beamport.service.flex_templates import FlexTemplateService
    from beamport.service.iam import ADMIN_EMAIL, IamService
    from beamport.service.jobs import JobService
    from beamport.service.leases import LeaseService
    from beamport.service.notify import WorkNotifier
    from beamport.service.quotas import JobQuotas
    from beamport.service.snapshots import SnapshotService
    from beamport.service.sql import SqlService
    from beamport.service.stages import StageRecorder
    from beamport.service.templates import TemplateService
    from beamport.service.workers import WorkerRegistry
    from beamport.store import open_store
    from beamport.store.iam import SqlIamStore
    from beamport.worker.pool import LocalWorkerPool

    store = open_store(settings.database_url, settings.data_dir)
    iam = IamService(SqlIamStore(store), enabled=settings.auth)
    worker_credentials = None
    if settings.auth:
        if iam.ensure_admin(settings.admin_key_path, settings.endpoint):
            log.info("Created the admin account %s; its key is %s", ADMIN_EMAIL, settings.admin_key_path)
        if with_workers and settings.local_workers > 0:
            worker_credentials = settings.local_worker_key_path
            iam.local_worker_credentials(worker_credentials, settings.endpoint)
    work = WorkNotifier()
    control = state_control(settings)
    available, streaming_engine = settings.engines()
    snapshots = SnapshotService(store, settings.data_dir, control)
    leases = LeaseService(
        store,
        default_report_interval_us=int(settings.worker_report_interval_s * 1e6),
        work=work,
        streaming_engine=streaming_engine,
        saved_state=snapshots,
    )
    registry = WorkerRegistry(store, leases, StageRecorder(store))
    sweeper = Sweeper(registry, snapshots=snapshots, check_database=getattr(store, "check_database", None))
    hooks: dict = {"on_startup": [sweeper.start], "on_shutdown": [sweeper.stop]}
    # Beam runs in the sidecar, never here (beamport/sidecar.py): usually ready before the first create, which
    # waits for it.
    if beam is None:
        beam = BeamSidecar()
        hooks["on_startup"].insert(0, beam.start)
    hooks["on_shutdown"].append(beam.stop)
    if with_workers and settings.local_workers > 0:
        pool = LocalWorkerPool(
            leases,
            settings.endpoint,
            settings.local_workers,
            settings.allowed_roots(),
            settings.data_dir,
            sdk_workers=settings.sdk_workers_per_job,
            credentials=worker_credentials,
            private_paths=settings.private_paths(),
            engine_flags=settings.worker_flags(),
        )
        # Each local worker imports Beam as it starts, as the sidecar does: on a 2-core machine, three imports of
        # Beam at once made the first answer and the first create (which waits for the sidecar) twice as slow.
        # A killed server's leftover workers are stopped at once all the same: they would go on with work that is
        # being leased again.
        workers = StartAfter(pool.start, pool.stop, beam.wait_first_start, WORKERS_AFTER_BEAM_S)
        hooks["on_startup"] += [pool.stop_leftovers, workers.start]
        hooks["on_shutdown"].insert(0, workers.stop)
    files = FilePolicy(settings.allowed_roots(), settings.private_paths())
    jobs = JobService(
        store,
        files,
        work=work,
        streaming_engine=streaming_engine,
        engines_available=available,
        saved_state=snapshots,
        pipelines_dir=settings.data_dir.resolve() / "pipelines",
        quotas=JobQuotas(store, settings.max_active_jobs, settings.max_jobs_per_minute),
        beam=beam,
    )
    hooks["on_startup"].append(jobs.start_waiting_jobs)  # streaming jobs created before it had an engine
    hooks["on_startup"].append(jobs.resume_updates)  # updates a stopped server left underway
    templates = TemplateService(jobs, files, builtin_dir=settings.data_dir.resolve() / "templates" / "builtin")
    flex = FlexTemplateService(
        jobs,
        files,
        settings.endpoint,
        settings.data_dir.resolve() / "templates" / "flex",
        iam,
        sandbox=settings.user_code_sandbox(),
        secrets_dir=settings.local_worker_key_path.parent,
    )
    details = ExecutionDetails(store)
    if settings.grpc_port:
        # Dataflow's gRPC services over the same service objects, on their own port (beamport/grpc/).
        from beamport.grpc.rpc import Services
        from beamport.grpc.server import GrpcServer

        services = Services(jobs, details, snapshots, templates, flex, iam)
        grpc_server = GrpcServer(services, settings.host, settings.grpc_port, settings.max_request_bytes)
        hooks["on_startup"].append(grpc_server.start)
        hooks["on_shutdown"].insert(0, grpc_server.stop)
    metadata = None
    if METADATA in settings.emulators:
        # A GCE metadata server on a loopback port of its own (http/metadata.py), for Google's default credentials.
        from beamport.http.metadata import MetadataServer

        metadata = MetadataServer(iam, settings.metadata_project, settings.endpoint)
        hooks["on_startup"].append(metadata.start)
        hooks["on_shutdown"].append(metadata.stop)
    if emulators is not None:
        # Here, not after uvicorn.run returns: uvicorn ends the process with the signal that stopped it.
        hooks["on_shutdown"].append(emulators.stop)
    hooks["on_startup"].append(_freeze_start_up_heap)
    sql = SqlService(store, files, templates)
    app = create_app(settings, jobs, leases, details, registry, templates, flex, sql, snapshots, iam, **hooks)
    app.state.metadata = metadata
    return app


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = settings.user_code_sandbox()
    try:
        sandbox.require()
    except SandboxUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    beam = BeamSidecar()
    beam.start()  # first: it imports Beam while this process imports the rest of the server
    (log.info if sandbox.enabled else log.warning)("Sandbox: %s", sandbox.describe())
    log.info("Engines:\n    %s", "\n    ".join(settings.engine_report()))
    # The emulators before the app: their variables (STORAGE_EMULATOR_HOST...) are this process's, and so its
    # workers', and their SDK harnesses'.
    emulators = Emulators(settings.emulators, settings.data_dir, settings.emulator_bin_dir)
    try:
        emulators.start()
    except EmulatorError as exc:
        beam.stop()
        raise SystemExit(f"error: {exc}") from None
    try:
        _serve(settings, beam, emulators)
    finally:  # when the app never ran (its shutdown stops them otherwise)
        emulators.stop()


def _serve(settings: Settings, beam: BeamSidecar, emulators: Emulators) -> None:
    app = build_app(settings, beam=beam, emulators=emulators)
    metadata = app.state.metadata
    env_file = emulators.write_env(
        {"GCE_METADATA_HOST": metadata.host, "GCE_METADATA_IP": metadata.host} if metadata else {}
    )
    if env_file is not None:
        log.info("Emulators: %s (for clients: source it, or `beamport emulators env`)", env_file)
    where = settings.database_url.split("@")[-1] if settings.database_url else settings.data_dir.resolve()
    log.info("Beamport serving the Dataflow API on http://%s:%d/v1b3/ (state: %s)", settings.host, settings.port, where)
    import uvicorn

    from beamport.http.timeouts import BodyTimeout, header_timeout_protocol
    from beamport.service.iam import ADMIN_EMAIL, Principal

    iam = app.state.iam
    if settings.auth:
        code = iam.sign_in_code(Principal(ADMIN_EMAIL))
        log.info(
            "Authentication is on. Clients use the admin key:\n    export GOOGLE_APPLICATION_CREDENTIALS=%s\n"
            "Console (one-time sign-in link): %s/console/signin?code=%s",
            settings.admin_key_path,
            settings.endpoint,
            code,
        )
    else:
        log.warning(
            "Authentication is OFF (--no-auth): anyone who reaches %s may run code on this host.", settings.endpoint
        )
    uvicorn.run(
        # A request must arrive within time limits (headers, then body), or it is answered 408 and its
        # connection closed: slow or half-sent requests cannot hold connections (http/timeouts.py).
        BodyTimeout(app, settings.request_body_timeout_s),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=header_timeout_protocol(settings.request_header_timeout_s),
        access_log=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
