"""The workers aggregate: the worker registry (each worker the service has heard from, its last health report and
CPU sample), with each worker's CPU series and lifecycle events."""

from __future__ import annotations

import abc
import builtins
import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Connection, Integer, bindparam, case, delete, func, insert, select, update

from beamport.store.database import Database
from beamport.store.tables import worker_cpu_samples, worker_events, workers

# Worker states
WORKER_RUNNING = "RUNNING"  # reporting, healthy
WORKER_UNHEALTHY = "UNHEALTHY"  # reporting, says it is not healthy
WORKER_IDLE = "IDLE"  # holds no work and asks for some (its lease polls are what the service hears of it)
WORKER_BROKEN = "BROKEN"  # said it is broken for good: gets no work
WORKER_LOST = "LOST"  # missed its deadline: nothing heard from it (health report, lease poll) in time
WORKER_SHUTDOWN = "SHUTDOWN"  # sent a shutdown notice, or its process was stopped by the local pool
# Workers that run work and report their health while they do (as far as the service knows).
WORKER_REPORTING_STATES = (WORKER_RUNNING, WORKER_UNHEALTHY)
WORKER_LIVE_STATES = (*WORKER_REPORTING_STATES, WORKER_IDLE)


@dataclass
class WorkerRecord:
    worker_id: str
    project_id: str
    location: str
    job_id: str
    state: str
    labels: str  # JSON
    first_seen_us: int
    last_seen_us: int
    report_interval_us: int
    reason: str = ""
    container_start_us: int | None = None
    vm_startup_us: int | None = None
    last_health_us: int | None = None
    health: str = "{}"  # JSON: the last WorkerHealthReport
    cpu_total_ms: int | None = None
    cpu_rate: float | None = None
    cpu_us: int | None = None
    work_item_id: int | None = None
    stacks_request_us: int | None = None
    stacks_us: int | None = None
    stacks: str = "[]"  # JSON: the last Stack list the worker sent

    @classmethod
    def first_seen(
        cls,
        worker_id: str,
        project_id: str,
        location: str,
        job_id: str,
        state: str,
        now_us: int,
        report_interval_us: int,
    ) -> WorkerRecord:
        """The registry entry of a worker heard from for the first time, at `now_us`."""
        return cls(
            worker_id=worker_id,
            project_id=project_id,
            location=location,
            job_id=job_id,
            state=state,
            labels="{}",
            first_seen_us=now_us,
            last_seen_us=now_us,
            report_interval_us=report_interval_us,
        )


@dataclass
class CpuSample:
    worker_id: str
    time_us: int
    total_ms: int
    rate: float


@dataclass
class WorkerEvent:
    worker_id: str
    job_id: str
    time_us: int
    event: str
    detail: str  # JSON
    seq: int | None = None


class WorkerStore(abc.ABC):
    @abc.abstractmethod
    def get_many(self, worker_ids: Iterable[str]) -> dict[str, WorkerRecord]: ...

    @abc.abstractmethod
    def list(
        self,
        job_id: str | None = None,
        states: Sequence[str] = (),
        projects: Collection[str] | None = None,
        locations: Collection[str] | None = None,
    ) -> list[WorkerRecord]:
        """Workers (of one job, in some states, of some projects and locations), most recently seen first."""

    @abc.abstractmethod
    def count(self, states: Sequence[str]) -> int:
        """How many workers are in these states."""

    @abc.abstractmethod
    def list_overdue(self, states: Sequence[str], intervals: int, now_us: int) -> builtins.list[WorkerRecord]:
        """Workers in these states not heard from (their last health report, or anything else they sent, whichever
        is later) for more than `intervals` of their report intervals before `now_us`; most recently seen first."""

    @abc.abstractmethod
    def list_cpu_samples(self, worker_id: str, limit: int = 60) -> builtins.list[CpuSample]:
        """The worker's latest CPU samples, oldest first."""

    @abc.abstractmethod
    def list_events(self, worker_id: str, limit: int = 100) -> builtins.list[WorkerEvent]:
        """The worker's latest lifecycle events, oldest first."""

    @abc.abstractmethod
    def request_stacks(self, worker_id: str, at_us: int) -> None:
        """Note that the worker's thread stacks were asked for (a Write leaves this alone)."""

    @abc.abstractmethod
    def save_stacks(self, worker_id: str, stacks: str, at_us: int) -> None:
        """Keep the thread stacks a worker sent (a Write leaves them alone)."""

    @abc.abstractmethod
    def prune(self, samples_before_us: int, gone_before_us: int, live_states: Sequence[str]) -> None:
        """Drop CPU samples older than `samples_before_us`, and workers (with their samples and events) not
        in a live state and not seen since `gone_before_us`."""


class SqlWorkerStore(WorkerStore):
    def __init__(self, db: Database):
        self.db = db

    def get_many(self, worker_ids) -> dict[str, WorkerRecord]:
        ids = list(dict.fromkeys(worker_ids))
        if not ids:
            return {}
        with self.db.reading() as conn:
            rows = conn.execute(_GET_WORKERS, {"ids": ids}).all()
        return {row.worker_id: WorkerRecord(*row) for row in rows}

    def list(self, job_id=None, states=(), projects=None, locations=None) -> list[WorkerRecord]:
        if (projects is not None and not projects) or (locations is not None and not locations):
            return []
        stmt = _list_workers_statement(job_id is not None, bool(states), projects is not None, locations is not None)
        params = {
            "job_id": job_id,
            "states": list(states),
            "projects": list(projects or ()),
            "locations": list(locations or ()),
        }
        with self.db.reading() as conn:
            return [WorkerRecord(*row) for row in conn.execute(stmt, params)]

    def count(self, states) -> int:
        with self.db.reading() as conn:
            return conn.execute(_COUNT_WORKERS, {"states": list(states)}).scalar_one()

    def list_overdue(self, states, intervals: int, now_us: int) -> builtins.list[WorkerRecord]:
        params = {"states": list(states), "intervals": intervals, "now_us": now_us}
        with self.db.reading() as conn:
            return [WorkerRecord(*row) for row in conn.execute(_OVERDUE_WORKERS, params)]

    def list_cpu_samples(self, worker_id: str, limit: int = 60) -> builtins.list[CpuSample]:
        stmt = (
            select(*worker_cpu_samples.c)
            .where(worker_cpu_samples.c.worker_id == worker_id)
            .order_by(worker_cpu_samples.c.time_us.desc())
            .limit(limit)
        )
        with self.db.reading() as conn:
            return [CpuSample(**row._mapping) for row in reversed(conn.execute(stmt).all())]

    def list_events(self, worker_id: str, limit: int = 100) -> builtins.list[WorkerEvent]:
        stmt = (
            select(*worker_events.c)
            .where(worker_events.c.worker_id == worker_id)
            .order_by(worker_events.c.seq.desc())
            .limit(limit)
        )
        with self.db.reading() as conn:
            return [WorkerEvent(**row._mapping) for row in reversed(conn.execute(stmt).all())]

    def request_stacks(self, worker_id: str, at_us: int) -> None:
        with self.db.writing() as conn:
            conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(stacks_request_us=at_us))

    def save_stacks(self, worker_id: str, stacks: str, at_us: int) -> None:
        with self.db.writing() as conn:
            conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(stacks=stacks, stacks_us=at_us))

    def prune(self, samples_before_us: int, gone_before_us: int, live_states) -> None:
        gone = (
            select(workers.c.worker_id)
            .where(workers.c.state.not_in(list(live_states)), workers.c.last_seen_us < gone_before_us)
            .scalar_subquery()
        )
        with self.db.writing() as conn:
            conn.execute(delete(worker_cpu_samples).where(worker_cpu_samples.c.time_us < samples_before_us))
            conn.execute(delete(worker_cpu_samples).where(worker_cpu_samples.c.worker_id.in_(gone)))
            conn.execute(delete(worker_events).where(worker_events.c.worker_id.in_(gone)))
            conn.execute(delete(workers).where(workers.c.worker_id.in_(gone)))

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def put(
        self,
        conn: Connection,
        records: builtins.list[WorkerRecord],
        samples: builtins.list[CpuSample],
        events: builtins.list[WorkerEvent],
    ) -> None:
        """Replace the stored workers with the same ids; add CPU samples and lifecycle events."""
        # The stacks columns are not the registry's to overwrite: the debug call and the worker set them.
        self.db.upsert(conn, workers, ["worker_id"], [vars(w) for w in records], keep=_STACK_COLUMNS)
        # A sample repeated (a retried request) is the same sample: keep the first.
        self.db.insert_new(conn, worker_cpu_samples, ["worker_id", "time_us"], [vars(c) for c in samples])
        rows = [{k: v for k, v in vars(e).items() if k != "seq"} for e in events]
        if rows:
            conn.execute(insert(worker_events), rows)


_STACK_COLUMNS = ("stacks_request_us", "stacks_us", "stacks")
# Columns in WorkerRecord's field order, so that a row makes a record positionally (the registry reads
# hundreds of workers a second under load).
_WORKER_COLUMNS = [workers.c[name] for name in WorkerRecord.__dataclass_fields__]
_GET_WORKERS = select(*_WORKER_COLUMNS).where(workers.c.worker_id.in_(bindparam("ids", expanding=True)))


# Statements the sweeper runs every second, built once.
@functools.cache
def _list_workers_statement(by_job: bool, by_state: bool, by_project: bool, by_location: bool):
    stmt = select(*_WORKER_COLUMNS)
    if by_job:
        stmt = stmt.where(workers.c.job_id == bindparam("job_id"))
    if by_state:
        stmt = stmt.where(workers.c.state.in_(bindparam("states", expanding=True)))
    if by_project:
        stmt = stmt.where(workers.c.project_id.in_(bindparam("projects", expanding=True)))
    if by_location:
        stmt = stmt.where(workers.c.location.in_(bindparam("locations", expanding=True)))
    return stmt.order_by(workers.c.last_seen_us.desc())


_IN_STATES = workers.c.state.in_(bindparam("states", expanding=True))
_COUNT_WORKERS = select(func.count()).select_from(workers).where(_IN_STATES)
# When the service last heard from a worker: its last health report or anything else it sent, whichever is later.
_HEARD_US = case(
    (func.coalesce(workers.c.last_health_us, 0) > workers.c.last_seen_us, workers.c.last_health_us),
    else_=workers.c.last_seen_us,
)
_OVERDUE_WORKERS = (
    select(*_WORKER_COLUMNS)
    .where(
        _IN_STATES,
        _HEARD_US + bindparam("intervals", type_=Integer) * workers.c.report_interval_us
        < bindparam("now_us", type_=BigInteger),
    )
    .order_by(workers.c.last_seen_us.desc())
)
