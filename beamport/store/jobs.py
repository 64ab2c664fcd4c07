"""The jobs aggregate: each job as its Google-JSON document, in two texts.

`summary` is what JOB_VIEW_SUMMARY shows (read by list and get), `detail` the rest (environment, steps, pipeline
description...). The other columns exist for indexing and concurrency control; the store never reads the texts.
"""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass

from sqlalchemy import Connection, Integer, bindparam, func, select, text

from beamport.store.database import Database, compare_and_set, insert_row
from beamport.store.tables import FROM_SNAPSHOT, jobs

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
    # While an update that carries state over is underway: the id of the active job this one is to replace (it
    # does not hold its name until then). Not part of the document; kept by its changes.
    replacing_job_id: str = ""


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
class ProjectJobs:
    """A project that has jobs, and when its newest job was created."""

    project_id: str
    latest_create_us: int


@dataclass
class JobChange:
    """Replace a stored job with `record`, provided its version is still `expected_version`."""

    record: JobRecord
    expected_version: int


class JobStore(abc.ABC):
    @abc.abstractmethod
    def get(self, project_id: str | None, job_id: str, with_detail: bool = True) -> JobRecord | None:
        """The job with this id in this project (any project when project_id is None)."""

    @abc.abstractmethod
    def get_summary(self, project_id: str, job_id: str) -> tuple[str, str] | None:
        """The job's location and summary document (JSON text), or None: what jobs.get answers by default."""

    @abc.abstractmethod
    def find_by_request_id(
        self, project_id: str, location: str, name: str, client_request_id: str
    ) -> JobRecord | None: ...

    @abc.abstractmethod
    def find_active(self, project_id: str, location: str, name: str) -> JobRecord | None:
        """The active job that holds this name (not one waiting to take over from it)."""

    @abc.abstractmethod
    def list(self, query: JobQuery, with_detail: bool = False) -> list[JobRecord]:
        """Jobs matching the query, newest first, at most query.limit."""

    @abc.abstractmethod
    def list_projects(self, project_ids: set[str] | None = None) -> builtins.list[ProjectJobs]:
        """The projects that have jobs (of `project_ids`; None: every project), the one with the newest job
        first."""

    @abc.abstractmethod
    def list_active(self, limit: int, after_seq: int | None = None) -> builtins.list[JobRecord]:
        """A page of the active jobs of every project, oldest first (summary only): at most `limit`, those created
        after the job with seq `after_seq` (the last of the page before)."""

    @abc.abstractmethod
    def list_active_from_snapshot(self, project_id: str, snapshot_id: str) -> builtins.list[JobRecord]:
        """The project's active jobs created from this snapshot (createdFromSnapshotId), oldest first (summary only)."""


class SqlJobStore(JobStore):
    def __init__(self, db: Database):
        self.db = db

    def get(self, project_id: str | None, job_id: str, with_detail: bool = True) -> JobRecord | None:
        # The read every jobs.get makes (and every service call on a job): the database's quickest.
        row = self.db.first_row(
            _GET_JOB[with_detail, project_id is not None], {"job_id": job_id, "project_id": project_id}
        )
        return job_record_of(row) if row is not None else None

    def get_summary(self, project_id: str, job_id: str) -> tuple[str, str] | None:
        # jobs.get's read: two columns, not the record's thirteen (a row's later columns lie past its
        # detail, which can spill into overflow pages), no record built: 3 us of its ~10.
        row = self.db.first_row(_GET_SUMMARY, {"job_id": job_id, "project_id": project_id})
        return (row["location"], row["summary"]) if row is not None else None

    def find_by_request_id(self, project_id, location, name, client_request_id):
        with self.db.reading() as conn:
            row = conn.execute(
                select(*jobs.c)
                .where(
                    jobs.c.project_id == project_id,
                    jobs.c.location == location,
                    jobs.c.client_request_id == client_request_id,
                    jobs.c.name == name,
                )
                .order_by(jobs.c.seq.desc())
                .limit(1)
            ).first()
        return job_record(row) if row else None

    def find_active(self, project_id, location, name):
        with self.db.reading() as conn:
            row = conn.execute(
                select(*jobs.c).where(
                    jobs.c.project_id == project_id,
                    jobs.c.location == location,
                    jobs.c.name == name,
                    jobs.c.active == True,  # noqa: E712 (SQL expression)
                    jobs.c.replacing_job_id == "",
                )
            ).first()
        return job_record(row) if row else None

    def list(self, query: JobQuery, with_detail: bool = False) -> list[JobRecord]:
        stmt, params = _list_jobs_statement(query, with_detail)
        with self.db.reading() as conn:
            return [job_record(row) for row in conn.execute(stmt, params).all()]

    def list_projects(self, project_ids: set[str] | None = None) -> builtins.list[ProjectJobs]:
        if project_ids is not None and not project_ids:
            return []
        with self.db.reading() as conn:
            return [ProjectJobs(row.project_id, row.create_us) for row in conn.execute(projects_statement(project_ids))]

    def list_active(self, limit: int, after_seq: int | None = None) -> builtins.list[JobRecord]:
        stmt = select(*SUMMARY_COLUMNS).where(jobs.c.active == True)  # noqa: E712
        if after_seq is not None:
            stmt = stmt.where(jobs.c.seq > after_seq)
        stmt = stmt.order_by(jobs.c.seq).limit(limit)
        with self.db.reading() as conn:
            return [job_record(row) for row in conn.execute(stmt)]

    def list_active_from_snapshot(self, project_id: str, snapshot_id: str) -> builtins.list[JobRecord]:
        stmt = select(*SUMMARY_COLUMNS).where(
            jobs.c.project_id == project_id,
            jobs.c.created_from_snapshot_id == snapshot_id,
            text(FROM_SNAPSHOT),  # literally, for the partial index
            jobs.c.active == True,  # noqa: E712 (SQL expression)
        )
        with self.db.reading() as conn:
            return [job_record(row) for row in conn.execute(stmt.order_by(jobs.c.seq))]

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def change(self, conn: Connection, changes: builtins.list[JobChange]) -> None:
        for change in changes:
            compare_and_set(conn, jobs, change.record.id, change.expected_version, _job_row(change.record))

    def add(self, conn: Connection, records: builtins.list[JobRecord]) -> builtins.list[int]:
        """Insert new jobs; their seqs."""
        return [insert_row(conn, jobs, _job_row(record)) for record in records]


SUMMARY_COLUMNS = [c for c in jobs.c if c.name != "detail"]


def _job_row(record: JobRecord) -> dict:
    return {
        "id": record.id,
        "project_id": record.project_id,
        "location": record.location,
        "name": record.name,
        "client_request_id": record.client_request_id,
        "active": record.active,
        "create_us": record.create_us,
        "end_us": record.end_us,
        "version": record.version,
        "summary": record.summary,
        "detail": record.detail,
        "created_from_snapshot_id": record.created_from_snapshot_id,
        "replacing_job_id": record.replacing_job_id,
    }


def job_record(row) -> JobRecord:
    """The record of a row of the jobs table (with or without its detail column)."""
    return job_record_of(row._mapping)


def job_record_of(mapping) -> JobRecord:
    """The record of a jobs row's columns, by name (with or without the detail column)."""
    return JobRecord(
        id=mapping["id"],
        project_id=mapping["project_id"],
        location=mapping["location"],
        name=mapping["name"],
        client_request_id=mapping["client_request_id"],
        active=bool(mapping["active"]),
        create_us=mapping["create_us"],
        end_us=mapping["end_us"],
        summary=mapping["summary"],
        # `in`, not .get(): a key the row lacks costs SQLAlchemy an exception, per row.
        detail=mapping["detail"] if "detail" in mapping else "",
        version=mapping["version"],
        seq=mapping["seq"],
        created_from_snapshot_id=mapping["created_from_snapshot_id"],
        replacing_job_id=mapping["replacing_job_id"],
    )


# jobs.get and jobs.list statements, built once and run with bound values: on SQLite,
# building and cache-keying a select() per call costs more than running it.


def _get_job_statement(with_detail: bool, by_project: bool):
    stmt = select(*(jobs.c if with_detail else SUMMARY_COLUMNS)).where(jobs.c.id == bindparam("job_id"))
    return stmt.where(jobs.c.project_id == bindparam("project_id")) if by_project else stmt


_GET_JOB = {(d, p): _get_job_statement(d, p) for d in (False, True) for p in (False, True)}
_GET_SUMMARY = select(jobs.c.location, jobs.c.summary).where(
    jobs.c.id == bindparam("job_id"), jobs.c.project_id == bindparam("project_id")
)

# A JobQuery field, and the condition it adds when it is set (not None).
_LIST_CONDITIONS = {
    "location": lambda value: jobs.c.location == value,
    "name": lambda value: jobs.c.name == value,
    "create_from_us": lambda value: jobs.c.create_us >= value,
    "create_to_us": lambda value: jobs.c.create_us < value,
    "end_from_us": lambda value: jobs.c.end_us >= value,
    "end_to_us": lambda value: jobs.c.end_us < value,
    "before_seq": lambda value: jobs.c.seq < value,
}
_LIST_STATEMENTS: dict[tuple, object] = {}  # at most 2 x 3 x 2**7 shapes


def projects_statement(project_ids: set[str] | None):
    """Each project's newest job (its highest seq), read from an index on (project_id, ..., seq) alone
    (ix_jobs_project_seq or another that covers it), then that one row per project by its primary key; the
    project of the newest job first."""
    newest = select(jobs.c.project_id, func.max(jobs.c.seq).label("seq")).group_by(jobs.c.project_id)
    if project_ids is not None:
        newest = newest.where(jobs.c.project_id.in_(sorted(project_ids)))
    latest = newest.subquery()
    return (
        select(jobs.c.project_id, jobs.c.create_us).join(latest, jobs.c.seq == latest.c.seq).order_by(jobs.c.seq.desc())
    )


def _list_jobs_statement(query: JobQuery, with_detail: bool):
    """The statement for the query's shape (which conditions it has), and the values to bind."""
    params = {field: getattr(query, field) for field in _LIST_CONDITIONS}
    params["name"] = params["name"] or None  # an empty name selects every name
    shape = (with_detail, query.filter, *(params[field] is not None for field in _LIST_CONDITIONS))
    stmt = _LIST_STATEMENTS.get(shape)
    if stmt is None:
        stmt = select(*(jobs.c if with_detail else SUMMARY_COLUMNS)).where(jobs.c.project_id == bindparam("project_id"))
        if query.filter == FILTER_ACTIVE:
            stmt = stmt.where(jobs.c.active == True)  # noqa: E712
        elif query.filter == FILTER_TERMINATED:
            stmt = stmt.where(jobs.c.active == False)  # noqa: E712
        for field, condition in _LIST_CONDITIONS.items():
            if params[field] is not None:
                stmt = stmt.where(condition(bindparam(field)))
        stmt = stmt.order_by(jobs.c.seq.desc()).limit(bindparam("limit", type_=Integer))
        _LIST_STATEMENTS[shape] = stmt
    params = {field: value for field, value in params.items() if value is not None}
    params.update(project_id=query.project_id, limit=query.limit)
    return stmt, params
