"""The work items aggregate: the units of work workers lease (for now one per job: the whole pipeline)."""

from __future__ import annotations

import abc
import builtins
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, literal_column, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from beamport.store.database import Database, compare_and_set, insert_row
from beamport.store.jobs import JobRecord, job_record_of
from beamport.store.tables import jobs, waiting_work, work_items

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
    # The state stored at `version`, as the store read or last wrote it (`state` when not given): by it a change
    # says whether the item leaves or joins the waiting work (the waiting_work table) without reading it again.
    stored_state: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.stored_state is None:
            self.stored_state = self.state


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
        self._join_waiting = _join_waiting_statement(db.postgres)

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
            stmt = _PENDING_PROJECTS[location is not None, projects is not None]
            rows = conn.execute(stmt, params)
            return [PendingProject(row.project_id, row.oldest_id, row.leased) for row in rows]

    def next_to_lease(self, location=None, projects=None, project_id=None):
        if projects is not None and not projects:
            return None
        params = {"location": location, "projects": sorted(projects or ()), "project_id": project_id}
        shape = (location is not None, projects is not None, project_id is not None)
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

    def write(
        self, conn: Connection, changes: builtins.list[WorkItemChange], items: builtins.list[WorkItemRecord]
    ) -> builtins.list[tuple[int, str, str]]:
        """Apply the changes, add the new items (see add), then bring the waiting work up to date; the new items'
        (id, project, location)."""
        self.change(conn, changes)
        added = self.add(conn, items)
        joined: dict[tuple[str, str], int] = {}  # per place: the smallest id of the items that became pending
        left: dict[tuple[str, str], set[int]] = {}  # per place: the items that were pending and are no longer
        for change in changes:
            record, place = change.record, (change.record.project_id, change.record.location)
            assert record.id is not None  # a stored item's
            was_pending, pending = record.stored_state == WORK_PENDING, record.state == WORK_PENDING
            if pending and not was_pending:  # a lost worker's item, put back to be leased again
                joined[place] = min(joined.get(place, record.id), record.id)
            elif was_pending and not pending:  # leased, or its job ended
                left.setdefault(place, set()).add(record.id)
        for item, (item_id, project_id, location) in zip(items, added, strict=True):
            if item.state == WORK_PENDING:
                joined[project_id, location] = min(joined.get((project_id, location), item_id), item_id)
        self._keep_waiting_work(conn, joined, left)
        return added

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

    def _keep_waiting_work(
        self, conn: Connection, joined: dict[tuple[str, str], int], left: dict[tuple[str, str], set[int]]
    ) -> None:
        """Keep waiting_work exact: each place's row holds the smallest id of its pending items, and there is no
        row for a place with none.

        Why this is exact with several writers (PostgreSQL, READ COMMITTED; SQLite has one writer at a time):
        every write that makes an item pending or not pending changes that item's row first (or inserts it), then
        locks its place's waiting_work row, places in sorted order (so the order of locks is the same in every
        write: work_items rows, then waiting_work rows; no deadlock), and holds the lock until it commits.
        - An item that becomes pending lowers the row's oldest_id to its id, or inserts the row (an upsert,
          atomic against a concurrent insert or delete). Ids grow, but transactions commit out of order: the
          smaller id is kept rather than assumed.
        - An item that stops being pending and was the row's oldest_id: the row is locked first (it is then the
          newest committed version), and the smallest pending id read by the next statement, whose snapshot
          (READ COMMITTED: each statement its own) sees every write that held the lock before. A write that makes
          an item of the place pending and has not reached the row yet waits for the lock, then lowers (or
          inserts) it with that item: so whichever of two writes locks the row first, the second sees or corrects
          the first's. (One statement reading the minimum while it waits for the lock would read it from before
          the wait: tests/test_store.py's concurrent writers caught that in every run.) SQLite needs no lock (one
          writer at a time): one statement moves the row on, if its oldest item left (a lease: it takes it).
        """
        for place in sorted(joined.keys() | left.keys()):
            params: dict[str, Any] = {"place_project": place[0], "place_location": place[1]}
            if place in joined:
                conn.execute(self._join_waiting, {**params, "joined_id": joined[place]})
            if place not in left:
                continue
            if place in joined:  # the upsert above locked the row, but which item is its oldest is not known
                if_left = False
            else:
                # The items that left were pending (at the versions changed), so the row's oldest_id, the smallest
                # pending id, is one of them exactly when it is the smallest of them.
                if_left, params["left_id"] = True, min(left[place])
                if self.db.postgres and conn.execute(_LOCK_WAITING, params).scalar() != params["left_id"]:
                    continue
            # Moved on to the place's next pending item; or, with none pending any more, the row goes.
            if conn.execute(_RECOUNT_WAITING[if_left], params).rowcount == 0:
                conn.execute(_DROP_WAITING[if_left], params)


def _row(item: WorkItemRecord) -> dict:
    row = dict(vars(item))
    row.pop("id")
    row.pop("stored_state")
    return row


def fill_waiting_work(conn: Connection) -> None:
    """Fill waiting_work afresh from the pending work items: migration 0010, and rows generated straight into the
    work_items table (benchmarks/store_bench.py). Plain SQL, as a migration's must stay valid."""
    conn.execute(text("DELETE FROM waiting_work"))
    conn.execute(
        text(
            "INSERT INTO waiting_work (project_id, location, oldest_id) "
            "SELECT project_id, location, min(id) FROM work_items WHERE state = 'PENDING' GROUP BY project_id, location"
        )
    )


# Partial indexes (tables.py) serve only conditions stated literally.
_PENDING = work_items.c.state == literal_column("'PENDING'")
_LEASED = work_items.c.state == literal_column("'LEASED'")


def _pending_projects_statement(by_location: bool, by_projects: bool):
    """Each project with pending work, its oldest pending item and its leased count: from waiting_work (a row per
    project and location with pending work; in any location, a project's rows taken together), so the cost grows
    with the number of projects that have work waiting (a short row each), not with the items that wait."""
    waiting = select(waiting_work.c.project_id, func.min(waiting_work.c.oldest_id).label("oldest_id"))
    if by_location:
        waiting = waiting.where(waiting_work.c.location == bindparam("location"))
    if by_projects:
        waiting = waiting.where(waiting_work.c.project_id.in_(bindparam("projects", expanding=True)))
    projects = waiting.group_by(waiting_work.c.project_id).subquery("projects")
    # Leased items are few (one per busy worker): counted once, by the partial index of held work, not per project.
    leased = work_items.alias("leased")
    counts = (
        select(leased.c.project_id, func.count().label("n"))
        .where(leased.c.state == literal_column("'LEASED'"))
        .group_by(leased.c.project_id)
        .subquery("counts")
    )
    return select(
        projects.c.project_id, projects.c.oldest_id, func.coalesce(counts.c.n, 0).label("leased")
    ).select_from(projects.outerjoin(counts, counts.c.project_id == projects.c.project_id))


def _next_to_lease_statement(by_location: bool, by_projects: bool, one_project: bool):
    """The fair-share choice (see next_to_lease) as one statement: the first project in the order, then its oldest
    pending item of an active job, joined with the job."""
    first: ColumnElement[Any]
    if one_project:
        first = bindparam("project_id")
    else:
        ranked = _pending_projects_statement(by_location, by_projects).subquery("ranked")
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
    (where, which): _pending_projects_statement(where, which).order_by("project_id")
    for where in _BOTH
    for which in _BOTH
}
_NEXT_TO_LEASE = {shape: _next_to_lease_statement(*shape) for shape in itertools.product(_BOTH, _BOTH, _BOTH)}
_OLDEST_PENDING = {(where, after): _oldest_pending_statement(where, after) for where in _BOTH for after in _BOTH}

# The waiting work of one place (project, location): see SqlWorkItemStore._keep_waiting_work.
_THE_PLACE = (waiting_work.c.project_id == bindparam("place_project")) & (
    waiting_work.c.location == bindparam("place_location")
)
_LOCK_WAITING = select(waiting_work.c.oldest_id).where(_THE_PLACE).with_for_update()
_PLACE_OLDEST = (
    select(func.min(work_items.c.id))
    .where(
        _PENDING,
        work_items.c.project_id == bindparam("place_project"),
        work_items.c.location == bindparam("place_location"),
    )
    .scalar_subquery()
)
_OLDEST_LEFT = waiting_work.c.oldest_id == bindparam("left_id")
# By whether only a row whose oldest item left (`left_id`) is changed.
_RECOUNT_WAITING = {
    if_left: update(waiting_work)
    .where(_THE_PLACE, _PLACE_OLDEST.is_not(None), *([_OLDEST_LEFT] if if_left else []))
    .values(oldest_id=_PLACE_OLDEST)
    for if_left in _BOTH
}
_DROP_WAITING = {
    if_left: delete(waiting_work).where(_THE_PLACE, *([_OLDEST_LEFT] if if_left else [])) for if_left in _BOTH
}


def _join_waiting_statement(postgres: bool):
    """Insert a place's row, or lower its oldest_id to the new pending item's (`joined_id`) if that is smaller."""
    stmt = (postgresql.insert if postgres else sqlite.insert)(waiting_work).values(
        project_id=bindparam("place_project"), location=bindparam("place_location"), oldest_id=bindparam("joined_id")
    )
    smaller = (func.least if postgres else func.min)(waiting_work.c.oldest_id, stmt.excluded.oldest_id)
    return stmt.on_conflict_do_update(index_elements=["project_id", "location"], set_={"oldest_id": smaller})
