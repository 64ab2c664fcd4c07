"""Assemble the service from its parts (store, service layer, HTTP layer) and run it under uvicorn."""

from __future__ import annotations

import gc
import logging
import threading

import uvicorn

from beamport import wire
from beamport.config import Settings
from beamport.engine.control import streaming_control
from beamport.errors import ApiError
from beamport.files import FilePolicy
from beamport.http.app import create_app
from beamport.http.timeouts import BodyTimeout, header_timeout_protocol
from beamport.lazy_imports import beam_module
from beamport.sandbox import SandboxUnavailable
from beamport.service.execution import ExecutionService
from beamport.service.flex_templates import FlexTemplateService
from beamport.service.iam import ADMIN_EMAIL, IamService, Principal
from beamport.service.jobs import JobService
from beamport.service.notify import WorkNotifier
from beamport.service.quotas import JobQuotas
from beamport.service.snapshots import SnapshotService
from beamport.service.sql import SqlService
from beamport.service.templates import TemplateService
from beamport.service.workers import WorkerRegistry
from beamport.store import open_store
from beamport.store.iam import SqlIamStore
from beamport.worker.pool import LocalWorkerPool

log = logging.getLogger("beamport")

SWEEP_EVERY_S = 1.0
EXPIRE_SNAPSHOTS_EVERY = 10  # sweeps


def _warm_up() -> None:
    """Import Beam now rather than in the first create, then take everything loaded so far out of the
    garbage collector's full collections: with Beam's modules in the heap, each full collection held the
    GIL for ~100 ms, a pause every request in flight waited out (the worst latencies under load)."""
    try:
        beam_module("beamport.translate.graph")
    finally:
        gc.collect()
        gc.freeze()
        # A list answer allocates thousands of short-lived objects: collect the young generation less often.
        gc.set_threshold(20_000, 20, 20)


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


def build_app(settings: Settings, with_workers: bool = True):
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
    control = streaming_control(settings)
    available, streaming_engine = settings.engines()
    snapshots = SnapshotService(store, settings.data_dir, control)
    execution = ExecutionService(
        store,
        default_report_interval_us=int(settings.worker_report_interval_s * 1e6),
        work=work,
        streaming_engine=streaming_engine,
        restore_location=snapshots.restore_location,
    )
    registry = WorkerRegistry(store, execution)
    sweeper = Sweeper(registry, snapshots=snapshots, check_database=getattr(store, "check_database", None))
    hooks: dict = {"on_startup": [sweeper.start], "on_shutdown": [sweeper.stop]}
    if with_workers and settings.local_workers > 0:
        pool = LocalWorkerPool(
            execution,
            settings.endpoint,
            settings.local_workers,
            settings.allowed_roots(),
            settings.data_dir,
            sdk_workers=settings.sdk_workers_per_job,
            credentials=worker_credentials,
            private_paths=settings.private_paths(),
            engine_flags=settings.worker_flags(),
        )
        hooks["on_startup"].append(pool.start)
        hooks["on_shutdown"].insert(0, pool.stop)
    files = FilePolicy(settings.allowed_roots(), settings.private_paths())
    jobs = JobService(
        store,
        files,
        work=work,
        streaming_engine=streaming_engine,
        engines_available=available,
        restore_location=snapshots.restore_location,
        carry_state=snapshots.carry_state,
        pipelines_dir=settings.data_dir.resolve() / "pipelines",
        quotas=JobQuotas(store, settings.max_active_jobs, settings.max_jobs_per_minute),
    )
    hooks["on_startup"].append(jobs.start_waiting_jobs)  # streaming jobs created before it had an engine
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
    # Beam is needed to describe a submitted pipeline: import it now rather than in the first create.
    hooks["on_startup"].append(threading.Thread(target=_warm_up, daemon=True).start)
    sql = SqlService(store, files, templates)
    return create_app(settings, jobs, execution, registry, templates, flex, sql, snapshots, iam, **hooks)


def serve(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = settings.user_code_sandbox()
    try:
        sandbox.require()
    except SandboxUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    (log.info if sandbox.enabled else log.warning)("Sandbox: %s", sandbox.describe())
    log.info("Engines:\n    %s", "\n    ".join(settings.engine_report()))
    app = build_app(settings)
    where = settings.database_url.split("@")[-1] if settings.database_url else settings.data_dir.resolve()
    log.info("Beamport serving the Dataflow API on http://%s:%d/v1b3/ (state: %s)", settings.host, settings.port, where)
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
