"""The store on SQLAlchemy: SQLite (the embedded default) or PostgreSQL, same code. Each aggregate's queries are
in its own module; this one puts them on one database and applies a Write in one transaction."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from beamport.store.base import Store, Write
from beamport.store.database import Database, DatabaseGone
from beamport.store.errors import ActiveNameTaken
from beamport.store.jobs import SqlJobStore
from beamport.store.messages import SqlMessageStore
from beamport.store.metrics import SqlMetricStore
from beamport.store.snapshots import SqlSnapshotStore
from beamport.store.sql_tables import SqlTableCatalog
from beamport.store.tables import metadata
from beamport.store.work_items import SqlWorkItemStore
from beamport.store.workers import SqlWorkerStore

MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = ["MIGRATIONS", "DatabaseGone", "SqlStore", "head_revision"]


# Alembic's record of the schema's revision, as Alembic creates it.
_alembic_version = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def head_revision() -> str:
    """The newest migration's revision: each migration's file is named after its revision, numbered in
    order (tests/test_store.py checks that Alembic agrees)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))


class SqlStore(Store):
    # The SQL aggregates, whose in-transaction methods (change, add, put; work_items.write) write() calls.
    jobs: SqlJobStore
    messages: SqlMessageStore
    metrics: SqlMetricStore
    work_items: SqlWorkItemStore
    workers: SqlWorkerStore
    snapshots: SqlSnapshotStore
    sql_tables: SqlTableCatalog

    def __init__(self, url: str):
        self.url = url
        self.db = Database(url)
        self.engine = self.db.engine
        self.reads_never_wait = self.db.reads_never_wait
        # For IamStore (store/iam.py), on the same database: how it writes.
        self._writer, self._write_lock = self.db.writer, self.db.write_lock
        self._migrate_lock = threading.Lock()
        self.jobs = SqlJobStore(self.db)
        self.messages = SqlMessageStore(self.db)
        self.metrics = SqlMetricStore(self.db)
        self.work_items = SqlWorkItemStore(self.db)
        self.workers = SqlWorkerStore(self.db)
        self.snapshots = SqlSnapshotStore(self.db)
        self.sql_tables = SqlTableCatalog(self.db)

    def check_database(self) -> None:
        """Raise DatabaseGone if the SQLite file this store opened was deleted or replaced (the server's sweeper
        asks every second, so that it notices even when nothing is written)."""
        self.db.check()

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent). Alembic (and Mako, which it imports) is
        loaded only when an existing schema is behind: running it took a fifth of a second of every start.
        A new database gets the schema of tables.py, which is the migrations' (tests/test_store.py)."""
        revision = self._revision()
        if revision == head_revision() or (revision is None and self._create_schema()):
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migrate_lock, self.db.writer.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _revision(self) -> str | None:
        """The schema's revision (Alembic's table), None for a database Alembic has not touched."""
        try:
            with self.db.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no such table yet
            return None

    def _create_schema(self) -> bool:
        """On a database with no tables: create tables.py's schema, marked as at the head revision, in one
        transaction. False (nothing done) when there are tables, or the creation failed (another server
        creating them at the same time, say): Alembic then brings whatever is there up to date."""
        try:
            with self._migrate_lock, self.db.writer.begin() as connection:
                if inspect(connection).get_table_names():
                    return False
                metadata.create_all(connection)
                _alembic_version.create(connection)
                connection.execute(_alembic_version.insert().values(version_num=head_revision()))
            return True
        except DBAPIError:
            return False

    def write(self, write: Write) -> None:
        try:
            with self.db.writing(durable=write.durable) as conn:
                self.jobs.change(conn, list(write.changed_jobs))
                new_seqs = self.jobs.add(conn, list(write.new_jobs))
                written = {change.record.id for change in write.changed_jobs} | {job.id for job in write.new_jobs}
                self.messages.add(conn, list(write.messages), write.time_messages, locked=written)
                new_items = self.work_items.write(conn, list(write.changed_work_items), list(write.new_work_items))
                self.metrics.put(conn, list(write.metrics), list(write.stages))
                self.workers.put(conn, list(write.workers), list(write.cpu_samples), list(write.worker_events))
                self.messages.add_autoscaling_events(conn, list(write.autoscaling_events))
        except IntegrityError as exc:
            text = str(exc.orig).lower()
            if "uq_jobs_active_name" in text or ("unique" in text and "jobs.name" in text):
                raise ActiveNameTaken(str(exc.orig)) from None
            raise
        # Only a committed write changes the caller's records.
        for change in write.changed_jobs:
            change.record.version = change.expected_version + 1
        for record, seq in zip(write.new_jobs, new_seqs, strict=True):
            record.seq = seq
        for item_change in write.changed_work_items:
            item_change.record.version = item_change.expected_version + 1
            item_change.record.stored_state = item_change.record.state
        for item, (item_id, project_id, location) in zip(write.new_work_items, new_items, strict=True):
            item.id, item.project_id, item.location, item.stored_state = item_id, project_id, location, item.state

    def close(self) -> None:
        self.db.close()
