"""The store on SQLAlchemy: SQLite (the embedded default) or PostgreSQL, same code."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Integer,
    bindparam,
    create_engine,
    delete,
    event,
    insert,
    make_url,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from beamport.errors import ApiError
from beamport.store.base import (
    FILTER_ACTIVE,
    FILTER_TERMINATED,
    ActiveNameTaken,
    AutoscalingEventRecord,
    CpuSample,
    JobQuery,
    JobRecord,
    MessageQuery,
    MessageRecord,
    MetricRecord,
    SnapshotRecord,
    SqlTableRecord,
    StageRecord,
    Store,
    VersionConflict,
    WorkerEvent,
    WorkerRecord,
    WorkItemRecord,
    Write,
)
from beamport.store.tables import (
    FROM_SNAPSHOT,
    autoscaling_events,
    job_messages,
    job_metrics,
    jobs,
    snapshots,
    sql_tables,
    stage_runs,
    work_items,
    worker_cpu_samples,
    worker_events,
    workers,
)

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)

_SUMMARY_COLUMNS = [c for c in jobs.c if c.name != "detail"]
_STACK_COLUMNS = ("stacks_request_us", "stacks_us", "stacks")


class DatabaseGone(ApiError):
    """The SQLite database file the store opened was deleted or replaced while the server ran. SQLite keeps
    writing into the open file, which no one will read again: nothing more may be accepted. An ApiError
    (UNAVAILABLE, 503) so that it reaches the client as it is, through every layer."""

    def __init__(self, message: str):
        super().__init__("UNAVAILABLE", message)


class _DatabaseFile:
    """The SQLite file a store opened, and whether it is still the one at its path.

    Checked before every write transaction and before its commit (a stat: microseconds, against a commit's
    fsync), by new connections, and by the server's sweeper. On Linux the process's open files are looked at
    too, at most once a second: a deleted WAL file that a new connection recreated has a path that exists,
    but the connections writing into the old one hold it open as "(deleted)".
    """

    SCAN_EVERY_S = 1.0

    def __init__(self, path: str):
        self.path = os.path.realpath(path)
        self.wal = self.path + "-wal"
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file first opened
        self.wal_mode = False
        self.gone: str | None = None  # why, once noticed: from then on everything is refused
        self._next_scan = 0.0
        self._deleted = (self.path + " (deleted)", self.wal + " (deleted)")

    def opened(self, journal_mode: str) -> None:
        """A connection opened the database: the first one says which file is this store's."""
        if self.identity is None:
            st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)
            self.wal_mode = journal_mode.lower() == "wal"
        else:
            self.check()

    def check(self, in_write: bool = False) -> None:
        """Raise DatabaseGone if the file at the path is no longer the one opened (`in_write`: inside a write
        transaction, when the WAL file must exist too)."""
        if self.gone is None and self.identity is not None:
            why = self._why_gone(in_write)
            if why is not None:
                self.gone = (
                    f"The server's database is gone: {why} while the server was running, so nothing more can "
                    "be stored. The server must be restarted."
                )
                log.error("%s", self.gone)
        if self.gone is not None:
            raise DatabaseGone(self.gone)

    def _why_gone(self, in_write: bool) -> str | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"{self.path} was deleted"
        if (st.st_dev, st.st_ino) != self.identity:
            return f"{self.path} was replaced by another file"
        if in_write and self.wal_mode and not os.path.exists(self.wal):
            return f"{self.wal} was deleted"
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.SCAN_EVERY_S
            return self._deleted_but_open()
        return None

    def _deleted_but_open(self) -> str | None:
        try:
            fds = os.scandir("/proc/self/fd")
        except OSError:
            return None  # not Linux: the stat checks above are all there is
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue  # closed meanwhile
                if target in self._deleted:
                    return f"{target.removesuffix(' (deleted)')} was deleted"
        return None


def _database_file(url: str) -> _DatabaseFile | None:
    """The file of a SQLite URL to watch (none for an in-memory database or one given as a URI)."""
    database = make_url(url).database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return _DatabaseFile(database)


def _sqlite_engine(url: str, watch: _DatabaseFile | None) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=32, pool_timeout=60)

    @event.listens_for(engine, "do_connect")
    def _do_connect(dialect, _record, cargs, cparams):
        # Once the store has its file, a new connection opens that file or fails: SQLite would otherwise create
        # an empty database in place of a deleted one, and answer "no such table".
        if watch is not None and watch.identity is not None and not cparams.get("uri"):
            watch.check()
            cargs[0] = f"file:{quote(watch.path)}?mode=rw"
            cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own
        # transaction handling defers it and would break BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        cursor.execute("PRAGMA synchronous=FULL")  # an accepted job survives power loss too
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        if watch is not None:
            watch.opened(mode)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front, so two writers never deadlock
        # upgrading read locks; readers don't block anyone (WAL).
        if connection.get_execution_options().get("write"):
            if watch is not None:
                watch.check()
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            if watch is not None and watch.gone is not None:  # reads too, once it is known: no stale answers
                raise DatabaseGone(watch.gone)
            connection.exec_driver_sql("BEGIN")

    @event.listens_for(engine, "commit")
    def _on_commit(connection):
        # The last moment to refuse a write that would go into a file no one will read: it is rolled back.
        if watch is not None and connection.get_execution_options().get("write"):
            watch.check(in_write=True)

    return engine


class SqlStore(Store):
    def __init__(self, url: str):
        self.url = url
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in steps of up to
        # 100 ms (its busy handler) while others keep taking it: writers queue on a lock here instead.
        self._write_lock = contextlib.nullcontext()
        self._database_file: _DatabaseFile | None = None
        if url.startswith("sqlite"):
            self._database_file = _database_file(url)
            self.engine = _sqlite_engine(url, self._database_file)
            self.reads_never_wait = True  # WAL: readers take no lock
            self._write_lock = threading.Lock()
        else:
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            self.engine = create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)
        self._writer = self.engine.execution_options(write=True)
        self._migrate_lock = threading.Lock()

    def check_database(self) -> None:
        """Raise DatabaseGone if the SQLite file this store opened was deleted or replaced (the server's sweeper
        asks every second, so that it notices even when nothing is written)."""
        if self._database_file is not None:
            self._database_file.check()

    # -- schema -------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migrate_lock, self._writer.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    # -- writes -------------------------------------------------------------

    def write(self, write: Write) -> None:
        try:
            with self._write_lock, self._writer.begin() as conn:
                for change in write.changed_jobs:
                    _compare_and_set(conn, jobs, change.record.id, change.expected_version, _job_row(change.record))
                new_seqs = [
                    conn.execute(insert(jobs).values(**_job_row(record))).inserted_primary_key[0]
                    for record in write.new_jobs
                ]
                rows = self._message_rows(conn, list(write.messages))
                if rows:
                    conn.execute(insert(job_messages), rows)
                for change in write.changed_work_items:
                    row = _work_item_row(change.record)
                    _compare_and_set(conn, work_items, change.record.id, change.expected_version, row)
                new_item_ids = [
                    conn.execute(insert(work_items).values(**_new_work_item_row(conn, item))).inserted_primary_key[0]
                    for item in write.new_work_items
                ]
                self._upsert(conn, job_metrics, ["job_id", "metric_key"], [vars(m) for m in write.metrics])
                self._upsert(conn, stage_runs, ["job_id", "stage"], [vars(st) for st in write.stages])
                # The stacks columns are not the registry's to overwrite: the debug call and the worker set them.
                self._upsert(conn, workers, ["worker_id"], [vars(w) for w in write.workers], keep=_STACK_COLUMNS)
                # A sample repeated (a retried request) is the same sample: keep the first.
                self._insert_new(
                    conn, worker_cpu_samples, ["worker_id", "time_us"], [vars(c) for c in write.cpu_samples]
                )
                events = [{k: v for k, v in vars(e).items() if k != "seq"} for e in write.worker_events]
                if events:
                    conn.execute(insert(worker_events), events)
                scaling = [{k: v for k, v in vars(e).items() if k != "seq"} for e in write.autoscaling_events]
                if scaling:
                    conn.execute(insert(autoscaling_events), scaling)
        except IntegrityError as exc:
            text = str(exc.orig).lower()
            if "uq_jobs_active_name" in text or ("unique" in text and "jobs.name" in text):
                raise ActiveNameTaken(str(exc.orig)) from None
            raise
        # Only a committed write changes the caller's records.
        for change in write.changed_jobs:
            change.record.version = change.expected_version + 1
        for record, seq in zip(write.new_jobs, new_seqs, strict=False):
            record.seq = seq
        for change in write.changed_work_items:
            change.record.version = change.expected_version + 1
        for item, item_id in zip(write.new_work_items, new_item_ids, strict=False):
            item.id = item_id

    def _message_rows(self, conn, messages: list[MessageRecord]) -> list[dict]:
        """Rows for new messages, their times never earlier than the job's last stored message.

        Pollers (Beam's DataflowRunner among them) ask for messages from the last time they saw: a
        message committed later with an earlier time would never reach them.
        """
        last: dict[str, int] = {}
        rows = []
        if self.engine.dialect.name == "postgresql":
            # Serialise message writers of one job (SQLite writers are serialised already); jobs locked in
            # id order, so that two writes with messages of the same jobs never deadlock.
            for job_id in sorted({m.job_id for m in messages}):
                conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id).with_for_update())
        for m in messages:
            if m.job_id not in last:
                latest = conn.execute(
                    select(job_messages.c.time_us)
                    .where(job_messages.c.job_id == m.job_id)
                    .order_by(job_messages.c.seq.desc())
                    .limit(1)
                ).scalar()
                last[m.job_id] = latest or 0
            m.time_us = last[m.job_id] = max(m.time_us, last[m.job_id])
            rows.append(
                {
                    "job_id": m.job_id,
                    "message_id": m.message_id,
                    "time_us": m.time_us,
                    "importance_rank": m.importance_rank,
                    "text": m.text,
                }
            )
        return rows

    def _upsert(self, conn, table, key: list[str], rows: list[dict], keep=()) -> None:
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        # In key order: two writers upserting the same rows lock them in the same order (no deadlock).
        rows = sorted(rows, key=lambda row: [row[k] for k in key])
        stmt = dialect_insert(table)
        updates = {c.name: stmt.excluded[c.name] for c in table.c if c.name not in key and c.name not in keep}
        conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=updates), rows)

    def _insert_new(self, conn, table, key: list[str], rows: list[dict]) -> None:
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        rows = sorted(rows, key=lambda row: [row[k] for k in key])
        conn.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=key), rows)

    def request_worker_stacks(self, worker_id: str, at_us: int) -> None:
        with self._write_lock, self._writer.begin() as conn:
            conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(stacks_request_us=at_us))

    def save_worker_stacks(self, worker_id: str, stacks: str, at_us: int) -> None:
        with self._write_lock, self._writer.begin() as conn:
            conn.execute(update(workers).where(workers.c.worker_id == worker_id).values(stacks=stacks, stacks_us=at_us))

    def prune_workers(self, samples_before_us: int, gone_before_us: int, live_states) -> None:
        gone = (
            select(workers.c.worker_id)
            .where(workers.c.state.not_in(list(live_states)), workers.c.last_seen_us < gone_before_us)
            .scalar_subquery()
        )
        with self._write_lock, self._writer.begin() as conn:
            conn.execute(delete(worker_cpu_samples).where(worker_cpu_samples.c.time_us < samples_before_us))
            conn.execute(delete(worker_cpu_samples).where(worker_cpu_samples.c.worker_id.in_(gone)))
            conn.execute(delete(worker_events).where(worker_events.c.worker_id.in_(gone)))
            conn.execute(delete(workers).where(workers.c.worker_id.in_(gone)))

    # -- reads --------------------------------------------------------------

    def get_job(self, project_id: str | None, job_id: str, with_detail: bool = True) -> JobRecord | None:
        stmt = _GET_JOB[with_detail, project_id is not None]
        with self.engine.connect() as conn:
            row = conn.execute(stmt, {"job_id": job_id, "project_id": project_id}).first()
        return _job_record(row) if row else None

    def find_job_by_request_id(self, project_id, location, name, client_request_id):
        with self.engine.connect() as conn:
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
        return _job_record(row) if row else None

    def find_active_job(self, project_id, location, name):
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*jobs.c).where(
                    jobs.c.project_id == project_id,
                    jobs.c.location == location,
                    jobs.c.name == name,
                    jobs.c.active == True,  # noqa: E712 (SQL expression)
                )
            ).first()
        return _job_record(row) if row else None

    def list_jobs(self, query: JobQuery, with_detail: bool = False) -> list[JobRecord]:
        stmt, params = _list_jobs_statement(query, with_detail)
        with self.engine.connect() as conn:
            return [_job_record(row) for row in conn.execute(stmt, params).all()]

    def list_messages(self, query: MessageQuery) -> list[MessageRecord]:
        params = {"job_id": query.job_id, "after_seq": query.after_seq, "limit": query.limit}
        with self.engine.connect() as conn:
            # A job's message times never decrease in seq order (the service layer's rule), so a time range is a
            # seq range: where it starts and ends is found by the time index, and the page is read in seq order
            # (the time conditions stay in the page's query too).
            for bound, field in (("start_us", "first_seq"), ("end_us", "end_seq")):
                value = getattr(query, bound)
                if value is not None:
                    params[bound] = value
                    params[field] = conn.execute(_FIRST_MESSAGE_AT, {"job_id": query.job_id, "time_us": value}).scalar()
            if query.start_us is not None and params["first_seq"] is None:
                return []  # nothing at or after the start
            if query.end_us is not None and params["end_seq"] is None:
                del params["end_seq"]  # nothing at or after the end: the range runs to the last message
            shape = tuple(params.get(name) is not None for name in _MESSAGE_BOUNDS)
            stmt = _list_messages_statement(query.min_importance_rank, shape)
            return [
                MessageRecord(
                    job_id=row.job_id,
                    message_id=row.message_id,
                    time_us=row.time_us,
                    importance_rank=row.importance_rank,
                    text=row.text,
                    seq=row.seq,
                )
                for row in conn.execute(stmt, {k: v for k, v in params.items() if v is not None})
            ]

    def list_active_jobs(self, limit: int) -> list[JobRecord]:
        stmt = select(*_SUMMARY_COLUMNS).where(jobs.c.active == True).order_by(jobs.c.seq).limit(limit)  # noqa: E712
        with self.engine.connect() as conn:
            return [_job_record(row) for row in conn.execute(stmt)]

    def get_work_item(self, item_id: int) -> WorkItemRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*work_items.c).where(work_items.c.id == item_id)).first()
        return WorkItemRecord(**row._mapping) if row else None

    def list_work_items(self, job_id: str) -> list[WorkItemRecord]:
        stmt = select(*work_items.c).where(work_items.c.job_id == job_id).order_by(work_items.c.id)
        with self.engine.connect() as conn:
            return [WorkItemRecord(**row._mapping) for row in conn.execute(stmt)]

    def list_work_items_in_state(self, state: str, limit: int) -> list[WorkItemRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(_WORK_ITEMS_IN_STATE, {"state": state, "limit": limit})
            return [WorkItemRecord(**row._mapping) for row in rows]

    def list_metrics(self, job_id: str, since_us: int | None = None) -> list[MetricRecord]:
        stmt = select(*job_metrics.c).where(job_metrics.c.job_id == job_id)
        if since_us is not None:
            stmt = stmt.where(job_metrics.c.update_us >= since_us)
        with self.engine.connect() as conn:
            return [MetricRecord(**row._mapping) for row in conn.execute(stmt.order_by(job_metrics.c.metric_key))]

    def list_stages(self, job_id: str) -> list[StageRecord]:
        stmt = select(*stage_runs.c).where(stage_runs.c.job_id == job_id).order_by(stage_runs.c.ordinal)
        with self.engine.connect() as conn:
            return [StageRecord(**row._mapping) for row in conn.execute(stmt)]

    def list_autoscaling_events(self, job_id, start_us=None, end_us=None, limit=1000):
        stmt = select(*autoscaling_events.c).where(autoscaling_events.c.job_id == job_id)
        if start_us is not None:
            stmt = stmt.where(autoscaling_events.c.time_us >= start_us)
        if end_us is not None:
            stmt = stmt.where(autoscaling_events.c.time_us < end_us)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(autoscaling_events.c.seq).limit(limit)).all()
        return [AutoscalingEventRecord(**row._mapping) for row in rows]

    def get_workers(self, worker_ids) -> dict[str, WorkerRecord]:
        ids = list(dict.fromkeys(worker_ids))
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_GET_WORKERS, {"ids": ids}).all()
        return {row.worker_id: WorkerRecord(*row) for row in rows}

    def list_workers(self, job_id=None, states=(), limit=1000, projects=None, locations=None) -> list[WorkerRecord]:
        if (projects is not None and not projects) or (locations is not None and not locations):
            return []
        stmt = _list_workers_statement(job_id is not None, bool(states), projects is not None, locations is not None)
        params = {
            "job_id": job_id,
            "states": list(states),
            "limit": limit,
            "projects": list(projects or ()),
            "locations": list(locations or ()),
        }
        with self.engine.connect() as conn:
            return [WorkerRecord(*row) for row in conn.execute(stmt, params)]

    def list_cpu_samples(self, worker_id: str, limit: int = 60) -> list[CpuSample]:
        stmt = (
            select(*worker_cpu_samples.c)
            .where(worker_cpu_samples.c.worker_id == worker_id)
            .order_by(worker_cpu_samples.c.time_us.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [CpuSample(**row._mapping) for row in reversed(conn.execute(stmt).all())]

    def list_worker_events(self, worker_id: str, limit: int = 100) -> list[WorkerEvent]:
        stmt = (
            select(*worker_events.c)
            .where(worker_events.c.worker_id == worker_id)
            .order_by(worker_events.c.seq.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [WorkerEvent(**row._mapping) for row in reversed(conn.execute(stmt).all())]

    def put_sql_table(self, table: SqlTableRecord) -> None:
        with self._write_lock, self._writer.begin() as conn:
            self._upsert(conn, sql_tables, ["project_id", "name"], [vars(table)])

    def list_sql_tables(self, project_id: str, names=None) -> list[SqlTableRecord]:
        stmt = select(*sql_tables.c).where(sql_tables.c.project_id == project_id)
        if names is not None:
            stmt = stmt.where(sql_tables.c.name.in_(list(names)))
        with self.engine.connect() as conn:
            return [SqlTableRecord(**row._mapping) for row in conn.execute(stmt.order_by(sql_tables.c.name))]

    def delete_sql_table(self, project_id: str, name: str) -> bool:
        with self._write_lock, self._writer.begin() as conn:
            done = conn.execute(
                delete(sql_tables).where(sql_tables.c.project_id == project_id, sql_tables.c.name == name)
            )
        return done.rowcount == 1

    # -- snapshots ------------------------------------------------------------

    def add_snapshot(self, snapshot: SnapshotRecord) -> None:
        with self._write_lock, self._writer.begin() as conn:
            conn.execute(insert(snapshots).values(**vars(snapshot)))

    def update_snapshot(self, snapshot: SnapshotRecord) -> bool:
        row = {k: v for k, v in vars(snapshot).items() if k != "id"}
        with self._write_lock, self._writer.begin() as conn:
            done = conn.execute(update(snapshots).where(snapshots.c.id == snapshot.id).values(**row))
        return done.rowcount == 1

    def get_snapshot(self, project_id: str, snapshot_id: str) -> SnapshotRecord | None:
        stmt = select(*snapshots.c).where(snapshots.c.id == snapshot_id, snapshots.c.project_id == project_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _snapshot_record(row) if row else None

    def list_snapshots(self, project_id, location, source_job_id=None, limit=1000) -> list[SnapshotRecord]:
        stmt = select(*snapshots.c).where(snapshots.c.project_id == project_id, snapshots.c.location == location)
        if source_job_id is not None:
            stmt = stmt.where(snapshots.c.source_job_id == source_job_id)
        stmt = stmt.order_by(snapshots.c.create_us.desc(), snapshots.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def list_expired_snapshots(self, now_us: int, limit: int = 100) -> list[SnapshotRecord]:
        stmt = select(*snapshots.c).where(snapshots.c.expire_us <= now_us)
        stmt = stmt.order_by(snapshots.c.expire_us).limit(limit)
        with self.engine.connect() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def list_snapshots_in_states(self, states, created_before_us: int, limit: int = 100) -> list[SnapshotRecord]:
        stmt = (
            select(*snapshots.c)
            .where(snapshots.c.state.in_(list(states)), snapshots.c.create_us < created_before_us)
            .order_by(snapshots.c.create_us)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def delete_snapshot(self, snapshot_id: str) -> bool:
        with self._write_lock, self._writer.begin() as conn:
            done = conn.execute(delete(snapshots).where(snapshots.c.id == snapshot_id))
        return done.rowcount == 1

    def find_active_jobs_from_snapshot(self, project_id: str, snapshot_id: str) -> list[JobRecord]:
        stmt = select(*_SUMMARY_COLUMNS).where(
            jobs.c.project_id == project_id,
            jobs.c.created_from_snapshot_id == snapshot_id,
            text(FROM_SNAPSHOT),  # literally, for the partial index
            jobs.c.active == True,  # noqa: E712 (SQL expression)
        )
        with self.engine.connect() as conn:
            return [_job_record(row) for row in conn.execute(stmt.order_by(jobs.c.seq))]

    def close(self) -> None:
        self.engine.dispose()


def _snapshot_record(row) -> SnapshotRecord:
    snapshot = SnapshotRecord(**row._mapping)
    snapshot.snapshot_sources = bool(snapshot.snapshot_sources)
    return snapshot


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
    }


def _compare_and_set(conn, table, record_id, expected_version: int, row: dict) -> None:
    """Replace the row with this id if its version is still the expected one, else VersionConflict."""
    result = conn.execute(
        update(table)
        .where(table.c.id == record_id, table.c.version == expected_version)
        .values({**row, "version": expected_version + 1})
    )
    if result.rowcount != 1:
        raise VersionConflict(f"{table.name} {record_id}")


def _work_item_row(item: WorkItemRecord) -> dict:
    row = dict(vars(item))
    row.pop("id")
    return row


def _new_work_item_row(conn, item: WorkItemRecord) -> dict:
    """A new work item's row, with its job's project and location (which never change)."""
    row = _work_item_row(item)
    place = conn.execute(select(jobs.c.project_id, jobs.c.location).where(jobs.c.id == item.job_id)).first()
    if place is not None:
        row["project_id"], row["location"] = place
    return row


def _job_record(row) -> JobRecord:
    mapping = row._mapping
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
    )


# jobs.get and jobs.list statements, built once and run with bound values: on SQLite,
# building and cache-keying a select() per call costs more than running it.


def _get_job_statement(with_detail: bool, by_project: bool):
    stmt = select(*(jobs.c if with_detail else _SUMMARY_COLUMNS)).where(jobs.c.id == bindparam("job_id"))
    return stmt.where(jobs.c.project_id == bindparam("project_id")) if by_project else stmt


_GET_JOB = {(d, p): _get_job_statement(d, p) for d in (False, True) for p in (False, True)}

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


def _list_jobs_statement(query: JobQuery, with_detail: bool):
    """The statement for the query's shape (which conditions it has), and the values to bind."""
    params = {field: getattr(query, field) for field in _LIST_CONDITIONS}
    params["name"] = params["name"] or None  # an empty name selects every name
    shape = (with_detail, query.filter, *(params[field] is not None for field in _LIST_CONDITIONS))
    stmt = _LIST_STATEMENTS.get(shape)
    if stmt is None:
        stmt = select(*(jobs.c if with_detail else _SUMMARY_COLUMNS)).where(
            jobs.c.project_id == bindparam("project_id")
        )
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
    return stmt.order_by(workers.c.last_seen_us.desc()).limit(bindparam("limit", type_=Integer))


_WORK_ITEMS_IN_STATE = (
    select(*work_items.c)
    .where(work_items.c.state == bindparam("state"))
    .order_by(work_items.c.id)
    .limit(bindparam("limit", type_=Integer))
)


# messages.list: the first message at or after a time (by the time index), and pages by shape.
_FIRST_MESSAGE_AT = (
    select(job_messages.c.seq)
    .where(job_messages.c.job_id == bindparam("job_id"), job_messages.c.time_us >= bindparam("time_us"))
    .order_by(job_messages.c.time_us, job_messages.c.seq)
    .limit(1)
)
# A MessageQuery's bounds, and the condition each adds when it is set.
_MESSAGE_BOUNDS = {
    "after_seq": lambda c: c.seq > bindparam("after_seq"),
    "first_seq": lambda c: c.seq >= bindparam("first_seq"),
    "end_seq": lambda c: c.seq < bindparam("end_seq"),
    "start_us": lambda c: c.time_us >= bindparam("start_us"),
    "end_us": lambda c: c.time_us < bindparam("end_us"),
}
IMPORTANCE_RANKS = 5  # MessageRecord.importance_rank: 0 DEBUG ... 4 ERROR


@functools.cache
def _list_messages_statement(min_importance_rank: int, shape: tuple[bool, ...]):
    """A page of a job's messages in seq order. With a minimum importance, one indexed range per importance at
    or above it, merged: a page of rare errors reads no more rows than a page of everything."""
    c = job_messages.c

    def page(rank: int | None):
        stmt = select(*job_messages.c).where(c.job_id == bindparam("job_id"))
        if rank is not None:
            stmt = stmt.where(c.importance_rank == rank)
        for (_name, condition), present in zip(_MESSAGE_BOUNDS.items(), shape, strict=True):
            if present:
                stmt = stmt.where(condition(c))
        return stmt.order_by(c.seq).limit(bindparam("limit", type_=Integer))

    if not min_importance_rank:
        return page(None)
    ranges = [select(*page(rank).subquery().c) for rank in range(min_importance_rank, IMPORTANCE_RANKS)]
    merged = union_all(*ranges).subquery()
    return select(*merged.c).order_by(merged.c.seq).limit(bindparam("limit", type_=Integer))
