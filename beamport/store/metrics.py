"""The metrics aggregate: what a job's run reported, its metrics (the latest value of each) and its stages."""

from __future__ import annotations

import abc
import builtins
from dataclasses import dataclass

from sqlalchemy import Connection, select

from beamport.store.database import Database
from beamport.store.tables import job_metrics, stage_runs


@dataclass
class MetricRecord:
    job_id: str
    metric_key: str  # identifies the metric (name, origin, context) within the job
    update_us: int
    doc: str  # the MetricUpdate, Google JSON


@dataclass
class StageRecord:
    job_id: str
    stage: str
    state: str
    ordinal: int
    start_us: int | None = None
    end_us: int | None = None
    worker_id: str | None = None
    work_item_id: int | None = None


class MetricStore(abc.ABC):
    @abc.abstractmethod
    def list(self, job_id: str, since_us: int | None = None) -> list[MetricRecord]:
        """The job's metrics (updated since `since_us`), by key."""

    @abc.abstractmethod
    def list_stages(self, job_id: str) -> builtins.list[StageRecord]:
        """The job's stages in the order they started."""


class SqlMetricStore(MetricStore):
    def __init__(self, db: Database):
        self.db = db

    def list(self, job_id: str, since_us: int | None = None) -> list[MetricRecord]:
        stmt = select(*job_metrics.c).where(job_metrics.c.job_id == job_id)
        if since_us is not None:
            stmt = stmt.where(job_metrics.c.update_us >= since_us)
        with self.db.reading() as conn:
            return [MetricRecord(**row._mapping) for row in conn.execute(stmt.order_by(job_metrics.c.metric_key))]

    def list_stages(self, job_id: str) -> builtins.list[StageRecord]:
        stmt = select(*stage_runs.c).where(stage_runs.c.job_id == job_id).order_by(stage_runs.c.ordinal)
        with self.db.reading() as conn:
            return [StageRecord(**row._mapping) for row in conn.execute(stmt)]

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def put(self, conn: Connection, metrics: builtins.list[MetricRecord], stages: builtins.list[StageRecord]) -> None:
        """Replace the stored metrics and stages with the same keys."""
        self.db.upsert(conn, job_metrics, ["job_id", "metric_key"], [vars(m) for m in metrics])
        self.db.upsert(conn, stage_runs, ["job_id", "stage"], [vars(st) for st in stages])
