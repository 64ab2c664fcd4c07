"""The store interface: what the service layer may ask of durable state.

Jobs are kept as their Google JSON document, split in two texts so that list
calls read only the small part: `summary` (what JOB_VIEW_SUMMARY shows) and
`detail` (the rest: environment, steps, pipeline description...). The other
columns exist for indexing and concurrency control.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

# jobs.list filters
FILTER_ALL = "ALL"
FILTER_ACTIVE = "ACTIVE"
FILTER_TERMINATED = "TERMINATED"


@dataclass
class JobRecord:
    id: str
    project_id: str
    location: str
    name: str
    client_request_id: str
    active: bool
    create_us: int
    end_us: int | None
    summary: str
    detail: str
    version: int = 1
    seq: int | None = None  # assigned by the store; orders jobs by creation
    created_from_snapshot_id: str = ""  # the document's createdFromSnapshotId


@dataclass
class MessageRecord:
    job_id: str
    message_id: str
    time_us: int
    importance_rank: int  # 0 DEBUG < 1 DETAILED < 2 BASIC < 3 WARNING < 4 ERROR (not the enum numbers)
    text: str
    seq: int | None = None


# Work item states
WORK_PENDING = "PENDING"  # waiting for a worker to lease it
WORK_LEASED = "LEASED"
WORK_DONE = "DONE"
WORK_FAILED = "FAILED"
WORK_CANCELLED = "CANCELLED"


@dataclass
class WorkItemRecord:
    job_id: str
    state: str = WORK_PENDING
    attempt: int = 1
    worker_id: str | None = None
    lease_expire_us: int | None = None
    next_report_index: int = 1
    start_us: int | None = None
    end_us: int | None = None
    version: int = 1
    failures: str = "[]"  # JSON: the attempts that failed, [{attempt, worker, reason}]
    progress: float | None = None  # the fraction of the work done, as the worker last reported it
    id: int | None = None  # assigned by the store
    # The job's project and location, copied by the store from the job when the item is added.
    project_id: str = ""
    location: str = ""


@dataclass
class MetricRecord:
    job_id: str
    metric_key: str  # identifies the metric (name, origin, context) within the job
    update_us: int
    doc: str  # the MetricUpdate, Google JSON


@dataclass
class StageRecord:
    job_id: str
    stage: str
    state: str
    ordinal: int
    start_us: int | None = None
    end_us: int | None = None
    worker_id: str | None = None
    work_item_id: int | None = None


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


@dataclass
class AutoscalingEventRecord:
    job_id: str
    time_us: int
    event_type: str
    current_workers: int
    target_workers: int
    description: str
    seq: int | None = None


@dataclass
class SqlTableRecord:
    project_id: str
    name: str
    path: str
    format: str
    schema: str  # JSON: [{name, type}]
    create_us: int


# Snapshot states (Dataflow's SnapshotState names; a deleted snapshot has no record)
SNAPSHOT_PENDING = "PENDING"
SNAPSHOT_RUNNING = "RUNNING"
SNAPSHOT_READY = "READY"
SNAPSHOT_FAILED = "FAILED"


@dataclass
class SnapshotRecord:
    id: str
    project_id: str
    location: str
    source_job_id: str
    state: str
    create_us: int
    ttl_us: int
    expire_us: int  # create_us + ttl_us
    description: str = ""
    snapshot_sources: bool = False
    disk_size_bytes: int | None = None  # once READY
    data_location: str = ""  # where the engine saved the state, once READY
    error: str = ""  # why it FAILED


@dataclass
class JobQuery:
    project_id: str
    location: str | None  # None: every location (jobs:aggregated)
    filter: str = FILTER_ALL
    name: str | None = None
    create_from_us: int | None = None  # inclusive
    create_to_us: int | None = None  # exclusive
    end_from_us: int | None = None
    end_to_us: int | None = None
    before_seq: int | None = None  # paging: only jobs created before this one
    limit: int = 50


@dataclass
class MessageQuery:
    job_id: str
    min_importance_rank: int = 0
    start_us: int | None = None  # inclusive
    end_us: int | None = None  # exclusive
    after_seq: int | None = None
    limit: int = 100


@dataclass
class JobChange:
    """Replace a stored job with `record`, provided its version is still `expected_version`."""

    record: JobRecord
    expected_version: int


class StoreError(Exception):
    pass


class VersionConflict(StoreError):
    """A job changed between read and write; the caller re-reads and tries again."""


class ActiveNameTaken(StoreError):
    """Another active job already has this (project, location, name)."""


@dataclass
class WorkItemChange:
    """Replace a stored work item with `record`, provided its version is still `expected_version`."""

    record: WorkItemRecord
    expected_version: int


@dataclass
class Write:
    """One atomic write, all or nothing. Metrics and stages replace the stored ones with the same key."""

    new_jobs: Sequence[JobRecord] = ()
    changed_jobs: Sequence[JobChange] = ()
    messages: Iterable[MessageRecord] = field(default_factory=list)
    new_work_items: Sequence[WorkItemRecord] = ()
    changed_work_items: Sequence[WorkItemChange] = ()
    metrics: Sequence[MetricRecord] = ()
    stages: Sequence[StageRecord] = ()
    workers: Sequence[WorkerRecord] = ()  # replace the stored ones with the same worker_id
    cpu_samples: Sequence[CpuSample] = ()
    worker_events: Sequence[WorkerEvent] = ()
    autoscaling_events: Sequence[AutoscalingEventRecord] = ()


class Store(abc.ABC):
    # True when a read neither takes nor waits for a lock (so a caller may run it on an event loop).
    reads_never_wait: bool = False

    @abc.abstractmethod
    def write(self, write: Write) -> None:
        """Apply a Write atomically. Raises VersionConflict or ActiveNameTaken and changes nothing.

        A job's message times never decrease in commit order: a new message's time is raised to the
        job's last stored message time if it is earlier.
        """

    @abc.abstractmethod
    def get_job(self, project_id: str | None, job_id: str, with_detail: bool = True) -> JobRecord | None:
        """The job with this id in this project (any project when project_id is None)."""

    @abc.abstractmethod
    def find_job_by_request_id(
        self, project_id: str, location: str, name: str, client_request_id: str
    ) -> JobRecord | None: ...

    @abc.abstractmethod
    def find_active_job(self, project_id: str, location: str, name: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_jobs(self, query: JobQuery, with_detail: bool = False) -> list[JobRecord]:
        """Jobs matching the query, newest first, at most query.limit."""

    @abc.abstractmethod
    def list_messages(self, query: MessageQuery) -> list[MessageRecord]:
        """Messages matching the query, oldest first, at most query.limit."""

    @abc.abstractmethod
    def list_active_jobs(self, limit: int) -> list[JobRecord]:
        """Active jobs of every project, oldest first (summary only)."""

    @abc.abstractmethod
    def get_work_item(self, item_id: int) -> WorkItemRecord | None: ...

    @abc.abstractmethod
    def list_work_items(self, job_id: str) -> list[WorkItemRecord]: ...

    @abc.abstractmethod
    def list_work_items_in_state(self, state: str, limit: int) -> list[WorkItemRecord]:
        """Work items in `state`, of every job, oldest first."""

    @abc.abstractmethod
    def list_metrics(self, job_id: str, since_us: int | None = None) -> list[MetricRecord]: ...

    @abc.abstractmethod
    def list_stages(self, job_id: str) -> list[StageRecord]:
        """The job's stages in the order they started."""

    @abc.abstractmethod
    def list_autoscaling_events(
        self, job_id: str, start_us: int | None = None, end_us: int | None = None, limit: int = 1000
    ) -> list[AutoscalingEventRecord]:
        """The job's autoscaling events in [start, end), oldest first."""

    @abc.abstractmethod
    def get_workers(self, worker_ids: Iterable[str]) -> dict[str, WorkerRecord]: ...

    @abc.abstractmethod
    def list_workers(
        self,
        job_id: str | None = None,
        states: Sequence[str] = (),
        limit: int = 1000,
        projects: Collection[str] | None = None,
        locations: Collection[str] | None = None,
    ) -> list[WorkerRecord]:
        """Workers (of one job, in some states, of some projects and locations), most recently seen first."""

    @abc.abstractmethod
    def list_cpu_samples(self, worker_id: str, limit: int = 60) -> list[CpuSample]:
        """The worker's latest CPU samples, oldest first."""

    @abc.abstractmethod
    def list_worker_events(self, worker_id: str, limit: int = 100) -> list[WorkerEvent]:
        """The worker's latest lifecycle events, oldest first."""

    @abc.abstractmethod
    def request_worker_stacks(self, worker_id: str, at_us: int) -> None:
        """Note that the worker's thread stacks were asked for (a Write leaves this alone)."""

    @abc.abstractmethod
    def save_worker_stacks(self, worker_id: str, stacks: str, at_us: int) -> None:
        """Keep the thread stacks a worker sent (a Write leaves them alone)."""

    @abc.abstractmethod
    def prune_workers(self, samples_before_us: int, gone_before_us: int, live_states: Sequence[str]) -> None:
        """Drop CPU samples older than `samples_before_us`, and workers (with their samples and events) not
        in a live state and not seen since `gone_before_us`."""

    @abc.abstractmethod
    def put_sql_table(self, table: SqlTableRecord) -> None:
        """Add a table to the SQL catalog, or replace the one of that name."""

    @abc.abstractmethod
    def list_sql_tables(self, project_id: str, names: Sequence[str] | None = None) -> list[SqlTableRecord]:
        """The project's tables (of these names), by name."""

    @abc.abstractmethod
    def delete_sql_table(self, project_id: str, name: str) -> bool: ...

    @abc.abstractmethod
    def add_snapshot(self, snapshot: SnapshotRecord) -> None: ...

    @abc.abstractmethod
    def update_snapshot(self, snapshot: SnapshotRecord) -> bool:
        """Replace the stored snapshot with this id; False (and nothing written) when it is gone."""

    @abc.abstractmethod
    def get_snapshot(self, project_id: str, snapshot_id: str) -> SnapshotRecord | None: ...

    @abc.abstractmethod
    def list_snapshots(
        self, project_id: str, location: str, source_job_id: str | None = None, limit: int = 1000
    ) -> list[SnapshotRecord]:
        """The snapshots of a project and location (of one source job), newest first."""

    @abc.abstractmethod
    def list_expired_snapshots(self, now_us: int, limit: int = 100) -> list[SnapshotRecord]:
        """Snapshots of every project whose expiry time has passed, oldest expiry first."""

    @abc.abstractmethod
    def list_snapshots_in_states(
        self, states: Sequence[str], created_before_us: int, limit: int = 100
    ) -> list[SnapshotRecord]:
        """Snapshots of every project in one of these states, created before the given time, oldest first."""

    @abc.abstractmethod
    def delete_snapshot(self, snapshot_id: str) -> bool: ...

    @abc.abstractmethod
    def find_active_jobs_from_snapshot(self, project_id: str, snapshot_id: str) -> list[JobRecord]:
        """The project's active jobs whose document names this snapshot in createdFromSnapshotId (summary only)."""

    @abc.abstractmethod
    def close(self) -> None: ...
