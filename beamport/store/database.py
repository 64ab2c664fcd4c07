"""The SQL database under every aggregate of the store: SQLite (the embedded default) or PostgreSQL, through
SQLAlchemy Core. How it is opened (SQLite's pragmas, the watch on its file), how a transaction reads and how one
writes (one writer at a time on SQLite), and the row operations the aggregates share."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import quote

from sqlalchemy import Table, bindparam, create_engine, event, insert, make_url, update
from sqlalchemy.engine import Connection, Engine

from beamport.errors import ApiError
from beamport.store.errors import VersionConflict

log = logging.getLogger(__name__)


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
    too, at most once a second, and at once when a write finds a new WAL file: a deleted WAL file that a new
    connection recreated has a path that exists, but the connections writing into the old one hold it open as
    "(deleted)".
    """

    SCAN_EVERY_S = 1.0

    def __init__(self, path: str):
        self.path = os.path.realpath(path)
        self.wal = self.path + "-wal"
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file first opened
        self.wal_mode = False
        self.gone: str | None = None  # why, once noticed: from then on everything is refused
        self._next_scan = 0.0
        self._wal_identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the WAL file a write last found
        self._deleted = (self.path + " (deleted)", self.wal + " (deleted)")

    def opened(self, journal_mode: str) -> None:
        """A connection opened the database: the first one says which file is this store's."""
        if self.identity is None:
            st = os.stat(self.path)
            self.identity = (st.st_dev, st.st_ino)
            self.wal_mode = journal_mode.lower() == "wal"
        else:
            self.check()

    def check(self, in_write: bool = False, scan: bool = False) -> None:
        """Raise DatabaseGone if the file at the path is no longer the one opened (`in_write`: inside a write
        transaction, when the WAL file must exist too; `scan`: the open files looked at now, not at most once a
        second)."""
        if scan:
            self._next_scan = 0.0
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
        if in_write and self.wal_mode:
            try:
                wal = os.stat(self.wal)
            except FileNotFoundError:
                return f"{self.wal} was deleted"
            if (wal.st_dev, wal.st_ino) != self._wal_identity:
                # A new WAL file: SQLite makes one after its last connection closed, and so does a connection
                # that opens the database after the WAL was deleted, while the others write on into the old one.
                self._wal_identity = (wal.st_dev, wal.st_ino)
                self._next_scan = 0.0  # which of the two: the open files say
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
        cursor.execute("PRAGMA synchronous=FULL")  # an accepted job survives power loss too (writes: _on_begin)
        cursor.execute("PRAGMA busy_timeout=30000")
        if watch is not None:  # a file: its WAL is checkpointed by a thread of the store's (_Checkpointer)
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()
        if watch is not None:
            watch.opened(mode)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock up front, so two writers never deadlock
        # upgrading read locks; readers don't block anyone (WAL).
        options = connection.get_execution_options()
        if options.get("write"):
            if watch is not None:
                watch.check()
            # Per write (Database.writing): FULL syncs the WAL at each commit, NORMAL at checkpoints only.
            connection.exec_driver_sql(f"PRAGMA synchronous={'NORMAL' if options.get('relaxed') else 'FULL'}")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            if watch is not None and watch.gone is not None:  # reads too, once it is known: no stale answers
                raise DatabaseGone(watch.gone)
            connection.exec_driver_sql("BEGIN")

    @event.listens_for(engine, "handle_error")
    def _on_error(context):
        # SQLite's own error when its files went from under it ("disk I/O error" from a connection that opens a
        # database whose WAL was deleted, a write into one a new connection recreated): said as what it is, the
        # database gone (503), once the files confirm it, rather than as an internal error.
        if watch is not None and watch.identity is not None and context.sqlalchemy_exception is not None:
            watch.check(scan=True)

    @event.listens_for(engine, "commit")
    def _on_commit(connection):
        # The last moment to refuse a write that would go into a file no one will read: it is rolled back.
        if watch is not None and connection.get_execution_options().get("write"):
            watch.check(in_write=True)

    return engine


class _Checkpointer:
    """Copies the WAL's committed pages into the database file in a thread of its own, twice a second while
    there are writes (a PASSIVE checkpoint: it waits for no reader or writer). SQLite would otherwise do it
    inside whichever commit filled 1,000 pages of WAL, which then takes the checkpoint's writes and fsync: a
    lease's p99 was 14-15 ms that way, 3.7-5.0 ms without (benchmarks/README.md).

    A writer starts the WAL over from its beginning only when it finds every frame copied; under steady writes
    some always came after the last checkpoint, so once the WAL holds RESTART_FRAMES, the frames written since
    are copied with the writers held off (the write lock: a few frames, a short wait), and the next writer
    starts it over."""

    INTERVAL_S = 0.5
    RESTART_FRAMES = 4096  # 16 MB of 4 KB pages

    def __init__(self, engine: Engine, write_lock: contextlib.AbstractContextManager):
        self.engine, self.write_lock = engine, write_lock
        self.wrote = threading.Event()  # set by each write; cleared by the checkpoint that follows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL_S):
            if self.wrote.is_set():
                self.wrote.clear()
                if self.checkpoint() >= self.RESTART_FRAMES:
                    with self.write_lock:
                        self.checkpoint()

    def checkpoint(self) -> int:
        """A PASSIVE checkpoint; the WAL's frames (0 when it failed)."""
        try:
            connection = self.engine.raw_connection()  # autocommit (_on_connect): no transaction around it
            try:
                _busy, frames, _copied = connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                return frames
            finally:
                connection.close()
        except Exception as exc:  # the file gone (DatabaseGone), a disk error: the next write says so
            log.debug("WAL checkpoint: %s", exc)
            return 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _PointReader:
    """A SQLite connection of its own for reads of one statement (Database.first_row), and those statements
    compiled once. Opened through an engine of its own, made as the store's is (its pragmas, the watch on the
    file), so that it takes none of the store's pooled connections: a new one would not open once the WAL file
    is gone, where a pooled one still answers until the next write notices (tests/test_bad_input.py)."""

    def __init__(self, engine: Engine, watch: _DatabaseFile | None):
        self.engine, self.watch = engine, watch
        self.lock = threading.Lock()
        self._connection: Any = None  # the DB-API connection, detached from the pool, once first used
        self._compiled: dict[int, tuple] = {}  # id(statement) -> (statement, SQL, parameters, column names)

    def first_row(self, statement, params: dict) -> dict | None:
        if self.watch is not None and self.watch.gone is not None:  # as the engine's reads do: no stale answers
            raise DatabaseGone(self.watch.gone)
        compiled = self._compiled.get(id(statement))
        if compiled is None or compiled[0] is not statement:
            compiled = self._compile(statement)
        _, sql, binds, columns = compiled
        if self._connection is None:
            pooled = self.engine.raw_connection()
            pooled.detach()  # this connection is ours from now on, not the pool's
            self._connection = pooled.dbapi_connection
        values = tuple(params[name] if name in params else value for name, value in binds)
        row = self._connection.execute(sql, values).fetchone()
        return dict(zip(columns, row, strict=True)) if row is not None else None

    def _compile(self, statement):
        compiled = statement.compile(dialect=self.engine.dialect)
        # Each parameter in order, with the value the statement gives it (used when `params` has none).
        binds = tuple((name, compiled.binds[name].effective_value) for name in compiled.positiontup)
        entry = (statement, compiled.string, binds, [c.key for c in statement.selected_columns])
        self._compiled[id(statement)] = entry
        return entry

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.engine.dispose()


class Database:
    """One database: its engine, and the transactions the aggregates read and write in."""

    def __init__(self, url: str):
        self.url = url
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in steps of up to
        # 100 ms (its busy handler) while others keep taking it: writers queue on a lock here instead.
        self.write_lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        self.file: _DatabaseFile | None = None
        self.reads_never_wait = False
        if url.startswith("sqlite"):
            self.file = _database_file(url)
            self.engine = _sqlite_engine(url, self.file)
            self.reads_never_wait = True  # WAL: readers take no lock
            self.write_lock = threading.Lock()
        else:
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            self.engine = create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)
        self.postgres = self.engine.dialect.name == "postgresql"
        self.writer = self.engine.execution_options(write=True)
        self._relaxed_writer = self.engine.execution_options(write=True, relaxed=True)
        # PostgreSQL's READ COMMITTED gives each statement its own snapshot, in a transaction or not: reads run
        # without one, which spares each read two round trips (BEGIN, ROLLBACK) and a lease four.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.postgres else self.engine
        self._point_reader = _PointReader(_sqlite_engine(url, self.file), self.file) if self.file is not None else None
        self._checkpointer = _Checkpointer(self.engine, self.write_lock) if self.file is not None else None
        self._statements: dict[tuple, Any] = {}  # upsert and insert_new statements, by shape

    def reading(self) -> Connection:
        """A connection for reads (`with db.reading() as conn:`)."""
        return self._reader.connect()

    def first_row(self, statement, params: dict) -> dict | None:
        """The first row of a read of one statement (a column name -> value dict, values as the driver gives
        them: SQLite's booleans are 0 or 1), or None.

        On SQLite it runs on a connection kept for these reads, without SQLAlchemy's work around each call
        (pool checkout, BEGIN, rollback, result objects): that work took 100 us of jobs.get's 110 us store
        read, whose query takes 10 (benchmarks/README.md). One statement is its own read transaction. The
        connection serves one caller at a time; a caller that finds it busy reads through SQLAlchemy."""
        reader = self._point_reader
        if reader is not None and reader.lock.acquire(blocking=False):
            try:
                return reader.first_row(statement, params)
            finally:
                reader.lock.release()
        with self.reading() as conn:
            row = conn.execute(statement, params).first()
        return dict(row._mapping) if row is not None else None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._point_reader is not None:
            with self._point_reader.lock:
                self._point_reader.close()
        self.engine.dispose()  # the last connection to close checkpoints the WAL whole

    @contextlib.contextmanager
    def writing(self, durable: bool = True):
        """A write transaction: committed when the block ends, rolled back if it raises. Not `durable`: its
        commit does not wait for the disk (store.base.Write.durable)."""
        with self.write_lock, (self.writer if durable else self._relaxed_writer).begin() as conn:
            if not durable and self.postgres:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield conn
        if self._checkpointer is not None:
            self._checkpointer.wrote.set()

    def check(self) -> None:
        """Raise DatabaseGone if the SQLite file was deleted or replaced."""
        if self.file is not None:
            self.file.check()

    def upsert(self, conn: Connection, table, key: list[str], rows: list[dict], keep=()) -> None:
        """Insert the rows, or replace the stored ones with the same key (but for the `keep` columns)."""
        if not rows:
            return
        # In key order: two writers upserting the same rows lock them in the same order (no deadlock).
        rows = sorted(rows, key=lambda row: [row[k] for k in key])
        conn.execute(self._statement("upsert", table, tuple(key), tuple(keep)), rows)

    def insert_new(self, conn: Connection, table, key: list[str], rows: list[dict]) -> None:
        """Insert the rows whose key is not stored yet."""
        if not rows:
            return
        rows = sorted(rows, key=lambda row: [row[k] for k in key])
        conn.execute(self._statement("insert_new", table, tuple(key), ()), rows)

    def _statement(self, kind: str, table, key: tuple[str, ...], keep: tuple[str, ...]):
        # Built once per shape: building one took about 0.3 ms of SQLAlchemy's Python, a tenth of a lease.
        cached = self._statements.get((kind, table.name, key, keep))
        if cached is None:
            stmt = self._dialect_insert()(table)
            if kind == "upsert":
                updates = {c.name: stmt.excluded[c.name] for c in table.c if c.name not in key and c.name not in keep}
                cached = stmt.on_conflict_do_update(index_elements=list(key), set_=updates)
            else:
                cached = stmt.on_conflict_do_nothing(index_elements=list(key))
            self._statements[(kind, table.name, key, keep)] = cached
        return cached

    def _dialect_insert(self):
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert


def compare_and_set(conn: Connection, table, record_id, expected_version: int, row: dict) -> None:
    """Replace the row with this id if its version is still the expected one, else VersionConflict."""
    values = {**row, "version": expected_version + 1}
    params = {f"new_{name}": value for name, value in values.items()}
    params.update(record_id=record_id, expected_version=expected_version)
    result = conn.execute(_compare_and_set_statement(table, tuple(values)), params)
    if result.rowcount != 1:
        raise VersionConflict(f"{table.name} {record_id}")


@functools.lru_cache(maxsize=64)
def _compare_and_set_statement(table: Table, columns: tuple[str, ...]):
    # Built once per table and set of columns (as upsert's): building it took about 0.3 ms of each write.
    return (
        update(table)
        .where(table.c.id == bindparam("record_id"), table.c.version == bindparam("expected_version"))
        .values({name: bindparam(f"new_{name}") for name in columns})
    )


def insert_row(conn: Connection, table: Table, row: dict) -> int:
    """Insert one row; its generated key."""
    key = conn.execute(insert(table).values(**row)).inserted_primary_key
    # SQLAlchemy types this Optional: it is None only for executions that are not a single-row insert.
    assert key is not None
    return key[0]
