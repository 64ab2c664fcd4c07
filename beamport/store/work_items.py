"""The work items aggregate: the units of work workers lease (for now one per job: the whole pipeline)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from sqlalchemy import Connection, Integer, bindparam, insert, select

from beamport.store.database import Database, compare_and_set
from beamport.store.tables import jobs, work_items

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
class WorkItemChange:
    """Replace a stored work item with `record`, provided its version is still `expected_version`."""

    record: WorkItemRecord
    expected_version: int


class WorkItemStore(abc.ABC):
    @abc.abstractmethod
    def get(self, item_id: int) -> WorkItemRecord | None: ...

    @abc.abstractmethod
    def list(self, job_id: str) -> list[WorkItemRecord]:
        """The job's work items, oldest first."""

    @abc.abstractmethod
    def list_in_state(self, state: str, limit: int) -> list[WorkItemRecord]:
        """Work items in `state`, of every job, oldest first."""


class SqlWorkItemStore(WorkItemStore):
    def __init__(self, db: Database):
        self.db = db

    def get(self, item_id: int) -> WorkItemRecord | None:
        with self.db.reading() as conn:
            row = conn.execute(select(*work_items.c).where(work_items.c.id == item_id)).first()
        return WorkItemRecord(**row._mapping) if row else None

    def list(self, job_id: str) -> list[WorkItemRecord]:
        stmt = select(*work_items.c).where(work_items.c.job_id == job_id).order_by(work_items.c.id)
        with self.db.reading() as conn:
            return [WorkItemRecord(**row._mapping) for row in conn.execute(stmt)]

    def list_in_state(self, state: str, limit: int) -> list[WorkItemRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(_WORK_ITEMS_IN_STATE, {"state": state, "limit": limit})
            return [WorkItemRecord(**row._mapping) for row in rows]

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def change(self, conn: Connection, changes: list[WorkItemChange]) -> None:
        for change in changes:
            compare_and_set(conn, work_items, change.record.id, change.expected_version, _row(change.record))

    def add(self, conn: Connection, items: list[WorkItemRecord]) -> list[tuple[int, str, str]]:
        """Insert new work items, each with its job's project and location (which never change); their
        (id, project, location)."""
        added = []
        for item in items:
            row = _row(item)
            place = conn.execute(select(jobs.c.project_id, jobs.c.location).where(jobs.c.id == item.job_id)).first()
            if place is not None:
                row["project_id"], row["location"] = place
            item_id = conn.execute(insert(work_items).values(**row)).inserted_primary_key[0]
            added.append((item_id, row["project_id"], row["location"]))
        return added


def _row(item: WorkItemRecord) -> dict:
    row = dict(vars(item))
    row.pop("id")
    return row


_WORK_ITEMS_IN_STATE = (
    select(*work_items.c)
    .where(work_items.c.state == bindparam("state"))
    .order_by(work_items.c.id)
    .limit(bindparam("limit", type_=Integer))
)
