"""The store interface: what the service layer may ask of durable state.

One store, split by aggregate: `store.jobs`, `store.messages` (a job's log), `store.metrics` (what a run reported),
`store.work_items`, `store.workers` (the worker registry), `store.snapshots` and `store.sql_tables` (the SQL table
catalog), each a small interface in its own module with its records; identity and access is IamStore (iam.py).
A `Write` changes several aggregates at once, all or nothing. The store keeps rows, not rules: the rules are the
service layer's (see docs/architecture.md for the two the store enforces under concurrency).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from beamport.store.jobs import JobChange, JobRecord, JobStore
from beamport.store.messages import AutoscalingEventRecord, MessageRecord, MessageStore, MessageTimer
from beamport.store.metrics import MetricRecord, MetricStore, StageRecord
from beamport.store.snapshots import SnapshotStore
from beamport.store.sql_tables import TableCatalog
from beamport.store.work_items import WorkItemChange, WorkItemRecord, WorkItemStore
from beamport.store.workers import CpuSample, WorkerEvent, WorkerRecord, WorkerStore


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
    # Called inside the write, before the messages are stored, with each of their jobs' latest stored message
    # time; the job's other message writers wait until this write commits. The service layer sets its rule here
    # (documents.messages_in_order: a job's message times never go backwards).
    time_messages: MessageTimer | None = None
    # False: the commit does not wait for the disk (SQLite's synchronous=NORMAL, PostgreSQL's synchronous_commit
    # off). It survives the server's crash, not the machine's; later durable writes make it durable too (both
    # logs are written in order). For writes whose loss leaves nothing wrong: a lost lease is work pending again.
    durable: bool = True


class Store(abc.ABC):
    jobs: JobStore
    messages: MessageStore
    metrics: MetricStore
    work_items: WorkItemStore
    workers: WorkerStore
    snapshots: SnapshotStore
    sql_tables: TableCatalog
    # True when a read neither takes nor waits for a lock (so a caller may run it on an event loop).
    reads_never_wait: bool = False

    @abc.abstractmethod
    def write(self, write: Write) -> None:
        """Apply a Write atomically. Raises VersionConflict or ActiveNameTaken and changes nothing."""

    @abc.abstractmethod
    def close(self) -> None: ...
