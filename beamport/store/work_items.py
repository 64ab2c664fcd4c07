"""The work items aggregate: the units of work workers lease (for now one per job: the whole pipeline)."""

from __future__ import annotations

import abc
import builtins
import itertools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, func, literal_column, select, true

from beamport.store.database import Database, compare_and_set, insert_row
from beamport.store.jobs import JobRecord, job_record_of
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
class PendingProject:
    """A project with work waiting for a worker."""

    project_id: str
    oldest_id: int  # the id of its oldest pending work item
    leased: int  # how many of its work items are leased (running)


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
    def pending_projects(
        self, location: str | None = None, projects: Collection[str] | None = None
    ) -> builtins.list[PendingProject]:
        """The projects with pending work (in the location; of these projects only), by project id."""

    @abc.abstractmethod
    def next_to_lease(
        self, location: str | None = None, projects: Collection[str] | None = None, project_id: str | None = None
    ) -> tuple[JobRecord, WorkItemRecord] | None:
        """In one query, of the projects with pending work (in the location; of these projects; this project only):
        the project that goes first in the fair-share order (the fewest leased items, then the oldest pending
        item), and its oldest pending work item whose job is active, with the job. None when there is none: no
        pending work, or the first project's pending items are all of jobs that are not active (pending_projects
        and oldest_pending go further)."""

    @abc.abstractmethod
    def oldest_pending(self, project_id: str, location: str | None = None, after_id: int | None = None):
        """The project's oldest pending work item (in the location; after `after_id`) whose job is active, if any."""

    @abc.abstractmethod
    def list_leased(
        self, worker_id: str | None = None, job_id: str | None = None, expired_before_us: int | None = None
    ) -> builtins.list[WorkItemRecord]:
        """Leased work items (to the worker; of the job; whose lease expired before the time), oldest first."""

    @abc.abstractmethod
    def leased_worker_ids(self) -> set[str]:
        """The workers holding a lease."""

    @abc.abstractmethod
    def pending_job_ids(self) -> builtins.list[str]:
        """The jobs with work waiting for a worker, oldest first."""


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

    def pending_projects(self, location=None, projects=None) -> builtins.list[PendingProject]:
        if projects is not None and not projects:
            return []
        params = {"location": location, "projects": sorted(projects or ())}
        with self.db.reading() as conn:
            stmt = _PENDING_PROJECTS[location is not None, projects is not None, self.db.postgres]
            rows = conn.execute(stmt, params)
            return [PendingProject(row.project_id, row.oldest_id, row.leased) for row in rows]

    def next_to_lease(self, location=None, projects=None, project_id=None):
        if projects is not None and not projects:
            return None
        params = {"location": location, "projects": sorted(projects or ()), "project_id": project_id}
        shape = (location is not None, projects is not None, project_id is not None, self.db.postgres)
        with self.db.reading() as conn:
            row = conn.execute(_NEXT_TO_LEASE[shape], params).first()
        if row is None:
            return None
        mapping = row._mapping
        job = job_record_of({c.name: mapping[f"job__{c.name}"] for c in jobs.c})
        return job, WorkItemRecord(**{c.name: mapping[c.name] for c in work_items.c})

    def oldest_pending(self, project_id, location=None, after_id=None) -> WorkItemRecord | None:
        params = {"project_id": project_id, "location": location, "after_id": after_id}
        with self.db.reading() as conn:
            row = conn.execute(_OLDEST_PENDING[location is not None, after_id is not None], params).first()
        return WorkItemRecord(**row._mapping) if row else None

    def list_leased(self, worker_id=None, job_id=None, expired_before_us=None) -> builtins.list[WorkItemRecord]:
        stmt = select(*work_items.c).where(_LEASED)
        if worker_id is not None:
            stmt = stmt.where(work_items.c.worker_id == worker_id)
        if job_id is not None:
            stmt = stmt.where(work_items.c.job_id == job_id)
        if expired_before_us is not None:
            stmt = stmt.where(work_items.c.lease_expire_us < expired_before_us)
        with self.db.reading() as conn:
            rows = conn.execute(stmt).all()
        # Ordered here: in SQL, SQLite would read every item in id order rather than the few leased ones by index.
        return [WorkItemRecord(**row._mapping) for row in sorted(rows, key=lambda row: row.id)]

    def leased_worker_ids(self) -> set[str]:
        stmt = select(work_items.c.worker_id).where(_LEASED).distinct()
        with self.db.reading() as conn:
            return {worker_id for (worker_id,) in conn.execute(stmt) if worker_id}

    def pending_job_ids(self) -> builtins.list[str]:
        stmt = select(work_items.c.id, work_items.c.job_id).where(_PENDING)
        with self.db.reading() as conn:
            rows = conn.execute(stmt).all()
        # Ordered here, as in list_leased: every pending item is read, by the index of pending work.
        return list(dict.fromkeys(job_id for _, job_id in sorted(rows)))

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def change(self, conn: Connection, changes: builtins.list[WorkItemChange]) -> None:
        for change in changes:
            compare_and_set(conn, work_items, change.record.id, change.expected_version, _row(change.record))

    def add(self, conn: Connection, items: builtins.list[WorkItemRecord]) -> builtins.list[tuple[int, str, str]]:
        """Insert new work items, each with its job's project and location (which never change); their
        (id, project, location)."""
        added = []
        for item in items:
            row = _row(item)
            place = conn.execute(select(jobs.c.project_id, jobs.c.location).where(jobs.c.id == item.job_id)).first()
            if place is not None:
                row["project_id"], row["location"] = place
            item_id = insert_row(conn, work_items, row)
            added.append((item_id, row["project_id"], row["location"]))
        return added


def _row(item: WorkItemRecord) -> dict:
    row = dict(vars(item))
    row.pop("id")
    return row


# Partial indexes (tables.py) serve only conditions stated literally.
_PENDING = work_items.c.state == literal_column("'PENDING'")
_LEASED = work_items.c.state == literal_column("'LEASED'")


def _pending_projects_statement(by_location: bool, by_projects: bool, lateral: bool):
    """Each project with pending work, its oldest pending item and its leased count. The projects are found by
    skipping from one to the next along the index of pending work: an index search or two per project, however
    many items wait. Where the database has LATERAL (PostgreSQL), one search finds the next project and its
    oldest item together."""
    pending, later, leased = work_items.alias("pending"), work_items.alias("later"), work_items.alias("leased")

    def waiting(alias):
        condition = alias.c.state == literal_column("'PENDING'")
        return condition & (alias.c.location == bindparam("location")) if by_location else condition

    oldest: ColumnElement[Any]
    if lateral:
        first = select(pending.c.project_id, pending.c.id.label("oldest_id")).where(waiting(pending))
        projects = first.order_by(pending.c.project_id, pending.c.id).limit(1).cte("projects", recursive=True)
        following = (
            select(later.c.project_id, later.c.id)
            .where(waiting(later), later.c.project_id > projects.c.project_id)
            .order_by(later.c.project_id, later.c.id)
            .limit(1)
            .lateral("following")
        )
        projects = projects.union_all(select(*following.c).select_from(projects.join(following, true())))
        oldest = projects.c.oldest_id
    else:
        first = select(func.min(pending.c.project_id).label("project_id")).where(waiting(pending))
        projects = first.cte("projects", recursive=True)
        next_project = (
            select(func.min(later.c.project_id)).where(waiting(later), later.c.project_id > projects.c.project_id)
        ).scalar_subquery()
        projects = projects.union_all(select(next_project).where(projects.c.project_id.is_not(None)))
        oldest = (
            select(func.min(pending.c.id)).where(waiting(pending), pending.c.project_id == projects.c.project_id)
        ).scalar_subquery()
    # Leased items are few (one per busy worker): counted once, by the partial index of held work, not per project.
    counts = (
        select(leased.c.project_id, func.count().label("n"))
        .where(leased.c.state == literal_column("'LEASED'"))
        .group_by(leased.c.project_id)
        .subquery("counts")
    )
    stmt = (
        select(projects.c.project_id, oldest.label("oldest_id"), func.coalesce(counts.c.n, 0).label("leased"))
        .select_from(projects.outerjoin(counts, counts.c.project_id == projects.c.project_id))
        .where(projects.c.project_id.is_not(None))
    )
    if by_projects:
        stmt = stmt.where(projects.c.project_id.in_(bindparam("projects", expanding=True)))
    return stmt


def _next_to_lease_statement(by_location: bool, by_projects: bool, one_project: bool, lateral: bool):
    """The fair-share choice (see next_to_lease) as one statement: the first project in the order, then its oldest
    pending item of an active job, joined with the job."""
    first: ColumnElement[Any]
    if one_project:
        first = bindparam("project_id")
    else:
        ranked = _pending_projects_statement(by_location, by_projects, lateral).subquery("ranked")
        first = select(ranked.c.project_id).order_by(ranked.c.leased, ranked.c.oldest_id).limit(1).scalar_subquery()
    candidates = (
        select(work_items.c.id)
        .join(jobs, jobs.c.id == work_items.c.job_id)
        .where(_PENDING, work_items.c.project_id == first, jobs.c.active == True)  # noqa: E712
    )
    if by_location:
        candidates = candidates.where(work_items.c.location == bindparam("location"))
    oldest = candidates.order_by(work_items.c.id).limit(1).scalar_subquery()
    columns = [*work_items.c, *(c.label(f"job__{c.name}") for c in jobs.c)]
    return select(*columns).join(jobs, jobs.c.id == work_items.c.job_id).where(work_items.c.id == oldest)


def _oldest_pending_statement(by_location: bool, after: bool):
    stmt = (
        select(*work_items.c)
        .join(jobs, jobs.c.id == work_items.c.job_id)
        .where(_PENDING, work_items.c.project_id == bindparam("project_id"), jobs.c.active == True)  # noqa: E712
    )
    if by_location:
        stmt = stmt.where(work_items.c.location == bindparam("location"))
    if after:
        stmt = stmt.where(work_items.c.id > bindparam("after_id"))
    return stmt.order_by(work_items.c.id).limit(1)


_BOTH = (False, True)
_PENDING_PROJECTS = {
    (where, which, lateral): _pending_projects_statement(where, which, lateral)
    for where in _BOTH
    for which in _BOTH
    for lateral in _BOTH
}
_NEXT_TO_LEASE = {shape: _next_to_lease_statement(*shape) for shape in itertools.product(_BOTH, _BOTH, _BOTH, _BOTH)}
_OLDEST_PENDING = {(where, after): _oldest_pending_statement(where, after) for where in _BOTH for after in _BOTH}
