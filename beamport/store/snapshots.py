"""The snapshots aggregate: the records of streaming jobs' snapshots (Dataflow's snapshots resource; the data
is the engine's). A deleted snapshot has no record."""

from __future__ import annotations

import abc
import builtins
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, tuple_, update

from beamport.store.database import Database
from beamport.store.tables import snapshots

# Snapshot states (Dataflow's SnapshotState names)
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


class SnapshotStore(abc.ABC):
    @abc.abstractmethod
    def add(self, snapshot: SnapshotRecord) -> None: ...

    @abc.abstractmethod
    def update(self, snapshot: SnapshotRecord) -> bool:
        """Replace the stored snapshot with this id; False (and nothing written) when it is gone."""

    @abc.abstractmethod
    def get(self, project_id: str, snapshot_id: str) -> SnapshotRecord | None: ...

    @abc.abstractmethod
    def list(self, project_id: str, location: str, source_job_id: str | None = None) -> list[SnapshotRecord]:
        """The snapshots of a project and location (of one source job), newest first."""

    @abc.abstractmethod
    def list_expired(
        self, now_us: int, limit: int, after: SnapshotRecord | None = None
    ) -> builtins.list[SnapshotRecord]:
        """A page of the snapshots of every project whose expiry time has passed, oldest expiry first: at most
        `limit`, those after `after` (the last of the page before)."""

    @abc.abstractmethod
    def list_in_states(
        self, states: Sequence[str], created_before_us: int, limit: int, after: SnapshotRecord | None = None
    ) -> builtins.list[SnapshotRecord]:
        """A page of the snapshots of every project in one of these states, created before the given time, oldest
        first: at most `limit`, those after `after` (the last of the page before)."""

    @abc.abstractmethod
    def delete(self, snapshot_id: str) -> bool: ...


class SqlSnapshotStore(SnapshotStore):
    def __init__(self, db: Database):
        self.db = db

    def add(self, snapshot: SnapshotRecord) -> None:
        with self.db.writing() as conn:
            conn.execute(insert(snapshots).values(**vars(snapshot)))

    def update(self, snapshot: SnapshotRecord) -> bool:
        row = {k: v for k, v in vars(snapshot).items() if k != "id"}
        with self.db.writing() as conn:
            done = conn.execute(update(snapshots).where(snapshots.c.id == snapshot.id).values(**row))
        return done.rowcount == 1

    def get(self, project_id: str, snapshot_id: str) -> SnapshotRecord | None:
        stmt = select(*snapshots.c).where(snapshots.c.id == snapshot_id, snapshots.c.project_id == project_id)
        with self.db.reading() as conn:
            row = conn.execute(stmt).first()
        return _snapshot_record(row) if row else None

    def list(self, project_id, location, source_job_id=None) -> list[SnapshotRecord]:
        stmt = select(*snapshots.c).where(snapshots.c.project_id == project_id, snapshots.c.location == location)
        if source_job_id is not None:
            stmt = stmt.where(snapshots.c.source_job_id == source_job_id)
        stmt = stmt.order_by(snapshots.c.create_us.desc(), snapshots.c.id.desc())
        with self.db.reading() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def list_expired(
        self, now_us: int, limit: int, after: SnapshotRecord | None = None
    ) -> builtins.list[SnapshotRecord]:
        stmt = select(*snapshots.c).where(snapshots.c.expire_us <= now_us)
        if after is not None:
            stmt = stmt.where(tuple_(snapshots.c.expire_us, snapshots.c.id) > tuple_(after.expire_us, after.id))
        stmt = stmt.order_by(snapshots.c.expire_us, snapshots.c.id).limit(limit)
        with self.db.reading() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def list_in_states(self, states, created_before_us: int, limit: int, after=None) -> builtins.list[SnapshotRecord]:
        stmt = select(*snapshots.c).where(
            snapshots.c.state.in_(list(states)), snapshots.c.create_us < created_before_us
        )
        if after is not None:
            stmt = stmt.where(tuple_(snapshots.c.create_us, snapshots.c.id) > tuple_(after.create_us, after.id))
        stmt = stmt.order_by(snapshots.c.create_us, snapshots.c.id).limit(limit)
        with self.db.reading() as conn:
            return [_snapshot_record(row) for row in conn.execute(stmt)]

    def delete(self, snapshot_id: str) -> bool:
        with self.db.writing() as conn:
            done = conn.execute(delete(snapshots).where(snapshots.c.id == snapshot_id))
        return done.rowcount == 1


def _snapshot_record(row) -> SnapshotRecord:
    snapshot = SnapshotRecord(**row._mapping)
    snapshot.snapshot_sources = bool(snapshot.snapshot_sources)
    return snapshot
