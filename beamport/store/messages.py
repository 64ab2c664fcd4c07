"""The messages aggregate: a job's log (its messages, and the autoscaling events messages.list shows with them)."""

from __future__ import annotations

import abc
import builtins
import functools
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import Connection, Integer, bindparam, insert, select, union_all

from beamport.store.database import Database
from beamport.store.tables import autoscaling_events, job_messages, jobs

IMPORTANCE_RANKS = 5  # MessageRecord.importance_rank: 0 DEBUG < 1 DETAILED < 2 BASIC < 3 WARNING < 4 ERROR


@dataclass
class MessageRecord:
    job_id: str
    message_id: str
    time_us: int
    importance_rank: int  # 0 DEBUG < 1 DETAILED < 2 BASIC < 3 WARNING < 4 ERROR (not the enum numbers)
    text: str
    seq: int | None = None


@dataclass
class MessageQuery:
    job_id: str
    min_importance_rank: int = 0
    start_us: int | None = None  # inclusive
    end_us: int | None = None  # exclusive
    after_seq: int | None = None
    limit: int = 100


@dataclass
class AutoscalingEventRecord:
    job_id: str
    time_us: int
    event_type: str
    current_workers: int
    target_workers: int
    description: str
    seq: int | None = None


# Given a Write's new messages and the latest stored message time of each of their jobs (0: none): may change
# the messages' times (the service layer's rule, service/documents.py).
MessageTimer = Callable[[list[MessageRecord], dict[str, int]], None]


class MessageStore(abc.ABC):
    @abc.abstractmethod
    def list(self, query: MessageQuery) -> list[MessageRecord]:
        """Messages matching the query, oldest first, at most query.limit. A time range is found as a range of
        seqs: it relies on the job's message times never decreasing in seq order (the service layer's rule)."""

    @abc.abstractmethod
    def list_autoscaling_events(
        self, job_id: str, start_us: int | None = None, end_us: int | None = None
    ) -> builtins.list[AutoscalingEventRecord]:
        """The job's autoscaling events in [start, end), oldest first."""

    @abc.abstractmethod
    def latest_autoscaling_event(self, job_id: str, event_type: str) -> AutoscalingEventRecord | None:
        """The job's latest autoscaling event of this type."""


class SqlMessageStore(MessageStore):
    def __init__(self, db: Database):
        self.db = db

    def list(self, query: MessageQuery) -> list[MessageRecord]:
        params = {"job_id": query.job_id, "after_seq": query.after_seq, "limit": query.limit}
        with self.db.reading() as conn:
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

    def list_autoscaling_events(self, job_id, start_us=None, end_us=None):
        stmt = select(*autoscaling_events.c).where(autoscaling_events.c.job_id == job_id)
        if start_us is not None:
            stmt = stmt.where(autoscaling_events.c.time_us >= start_us)
        if end_us is not None:
            stmt = stmt.where(autoscaling_events.c.time_us < end_us)
        with self.db.reading() as conn:
            rows = conn.execute(stmt.order_by(autoscaling_events.c.seq)).all()
        return [AutoscalingEventRecord(**row._mapping) for row in rows]

    def latest_autoscaling_event(self, job_id: str, event_type: str) -> AutoscalingEventRecord | None:
        stmt = (
            select(*autoscaling_events.c)
            .where(autoscaling_events.c.job_id == job_id, autoscaling_events.c.event_type == event_type)
            .order_by(autoscaling_events.c.seq.desc())
            .limit(1)
        )
        with self.db.reading() as conn:
            row = conn.execute(stmt).first()
        return AutoscalingEventRecord(**row._mapping) if row else None

    # -- in a Write's transaction (SqlStore.write) ----------------------------------------------------------------

    def add(
        self,
        conn: Connection,
        messages: builtins.list[MessageRecord],
        timer: MessageTimer | None,
        locked: Collection[str] = (),
    ) -> None:
        """Insert new messages; with a timer, first let it see each job's latest stored message time, while the
        job's other message writers wait for this transaction (SQLite's writers wait already; on PostgreSQL the
        jobs' rows are locked, in id order, so that two writes with messages of the same jobs never deadlock;
        `locked`: jobs whose rows this transaction has written already, and so holds)."""
        if not messages:
            return
        if timer is not None:
            job_ids = sorted({m.job_id for m in messages})
            if self.db.postgres:
                for job_id in job_ids:
                    if job_id not in locked:
                        conn.execute(select(jobs.c.seq).where(jobs.c.id == job_id).with_for_update())
            latest = {job_id: conn.execute(_LATEST_TIME, {"job_id": job_id}).scalar() or 0 for job_id in job_ids}
            timer(messages, latest)
        rows = [
            {
                "job_id": m.job_id,
                "message_id": m.message_id,
                "time_us": m.time_us,
                "importance_rank": m.importance_rank,
                "text": m.text,
            }
            for m in messages
        ]
        conn.execute(insert(job_messages), rows)

    def add_autoscaling_events(self, conn: Connection, events: builtins.list[AutoscalingEventRecord]) -> None:
        rows = [{k: v for k, v in vars(e).items() if k != "seq"} for e in events]
        if rows:
            conn.execute(insert(autoscaling_events), rows)


# The time of a job's last message.
_LATEST_TIME = (
    select(job_messages.c.time_us)
    .where(job_messages.c.job_id == bindparam("job_id"))
    .order_by(job_messages.c.seq.desc())
    .limit(1)
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


@functools.cache
def _list_messages_statement(min_importance_rank: int, shape: tuple[bool, ...]):
    """A page of a job's messages in seq order. With a minimum importance: the page's seqs from one range of the
    importance index per importance at or above it, merged (index entries only), then those rows: a page of rare
    errors reads no more rows than a page of everything."""
    c = job_messages.c

    def conditions(stmt):
        for (_name, condition), present in zip(_MESSAGE_BOUNDS.items(), shape, strict=True):
            if present:
                stmt = stmt.where(condition(c))
        return stmt.order_by(c.seq).limit(bindparam("limit", type_=Integer))

    if not min_importance_rank:
        return conditions(select(*job_messages.c).where(c.job_id == bindparam("job_id")))
    ranges = [
        select(conditions(select(c.seq).where(c.job_id == bindparam("job_id"), c.importance_rank == rank)).subquery().c)
        for rank in range(min_importance_rank, IMPORTANCE_RANKS)
    ]
    merged = union_all(*ranges).subquery()
    page = select(merged.c.seq).order_by(merged.c.seq).limit(bindparam("limit", type_=Integer))
    return select(*job_messages.c).where(c.seq.in_(page.scalar_subquery())).order_by(c.seq)
