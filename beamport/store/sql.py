"""The store on SQLAlchemy: SQLite (the embedded default) or PostgreSQL, same code. Each aggregate's queries are
in its own module; this one puts them on one database and applies a Write in one transaction."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from beamport.store.base import Store, Write
from beamport.store.database import Database, DatabaseGone
from beamport.store.errors import ActiveNameTaken
from beamport.store.jobs import SqlJobStore
from beamport.store.messages import SqlMessageStore
from beamport.store.metrics import SqlMetricStore
from beamport.store.snapshots import SqlSnapshotStore
from beamport.store.sql_tables import SqlTableCatalog
from beamport.store.work_items import SqlWorkItemStore
from beamport.store.workers import SqlWorkerStore

MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = ["MIGRATIONS", "DatabaseGone", "SqlStore", "head_revision"]


def head_revision() -> str:
    """The newest migration's revision: each migration's file is named after its revision, numbered in
    order (tests/test_store.py checks that Alembic agrees)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*.py"))


class SqlStore(Store):
    # The SQL aggregates, whose in-transaction methods (change, add, put) write() calls.
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
        loaded only when the schema is behind: a tenth of a second of every start otherwise."""
        if self._revision() == head_revision():
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

    def write(self, write: Write) -> None:
        try:
            with self.db.writing() as conn:
                self.jobs.change(conn, list(write.changed_jobs))
                new_seqs = self.jobs.add(conn, list(write.new_jobs))
                self.messages.add(conn, list(write.messages), write.time_messages)
                self.work_items.change(conn, list(write.changed_work_items))
                new_items = self.work_items.add(conn, list(write.new_work_items))
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
        for item, (item_id, project_id, location) in zip(write.new_work_items, new_items, strict=True):
            item.id, item.project_id, item.location = item_id, project_id, location

    def close(self) -> None:
        self.db.close()
