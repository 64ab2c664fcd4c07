"""Jobs as stored documents: records to and from their Google-JSON form, messages, lookups."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import orjson

from beamport import job_states, wire
from beamport.errors import ApiError, not_found
from beamport.service import model
from beamport.store.base import Store, Write
from beamport.store.errors import VersionConflict
from beamport.store.jobs import JobChange, JobRecord
from beamport.store.messages import MessageRecord
from beamport.store.work_items import WORK_LEASED, WORK_PENDING, WorkItemChange

ACTIVE_PAGE = 1000  # active jobs read at a time
CONFLICT_ATTEMPTS = 50  # attempts of a change that meets concurrent ones (retry_on_conflict)

T = TypeVar("T")


def timestamp(us: int) -> str:
    return wire.format_timestamp_us(us)


def job_message(job_id: str, now_us: int, importance: str, text: str) -> MessageRecord:
    return MessageRecord(
        job_id=job_id,
        message_id=model.new_message_id(),
        time_us=now_us,
        importance_rank=model.IMPORTANCE_RANK[importance],
        text=text,
    )


def messages_in_order(messages: list[MessageRecord], latest: dict[str, int]) -> None:
    """A job's message times never go backwards in commit order: a new message is never earlier than the job's
    latest stored one (`latest`, job id -> time). Pollers (Beam's DataflowRunner among them) ask for messages
    from the last time they saw: a message committed later with an earlier time would never reach them."""
    for m in messages:
        m.time_us = latest[m.job_id] = max(m.time_us, latest[m.job_id])


def commit(store: Store, write: Write) -> None:
    """Apply a write with the rules that hold inside it (messages_in_order)."""
    write.time_messages = messages_in_order
    store.write(write)


def render_message(m: MessageRecord) -> dict:
    return {
        "id": m.message_id,
        "time": timestamp(m.time_us),
        "messageText": m.text,
        "messageImportance": model.IMPORTANCE_ORDER[m.importance_rank],
    }


def record_from_document(doc: dict, record: JobRecord | None = None) -> JobRecord:
    summary, detail = model.split_document(doc)
    active = not job_states.is_terminal(doc.get("currentState"))
    end_us = None
    if not active:
        end_us = wire.parse_timestamp_us(doc.get("currentStateTime"), "currentStateTime")
    fields = dict(
        id=doc["id"],
        project_id=doc["projectId"],
        location=doc["location"],
        name=doc["name"],
        client_request_id=doc.get("clientRequestId", ""),
        active=active,
        create_us=wire.parse_timestamp_us(doc["createTime"], "createTime"),
        end_us=end_us,
        summary=orjson.dumps(summary).decode(),
        detail=orjson.dumps(detail).decode(),
        created_from_snapshot_id=doc.get("createdFromSnapshotId") or "",
    )
    if record is None:
        return JobRecord(**fields)
    for key, value in fields.items():
        setattr(record, key, value)
    return record


def document(record: JobRecord) -> dict:
    doc = orjson.loads(record.summary)
    if record.detail:
        doc.update(orjson.loads(record.detail))
    return doc


def load_job(
    store: Store, project_id: str | None, location: str | None, job_id: str, with_detail: bool = True
) -> JobRecord:
    """The job, or NOT_FOUND when it does not exist in this project (any project when None; and location, when
    given)."""
    record = store.jobs.get(project_id, job_id, with_detail=with_detail)
    if record is None or (location is not None and record.location != location):
        raise job_not_found(job_id, location)
    return record


def job_not_found(job_id: str, location: str | None) -> ApiError:
    where = f" in location {location}" if location else ""
    return not_found(
        f"Information about job {job_id}{where} could not be found in our system. "
        "Please double check that the id is correct."
    )


def render_job(record: JobRecord, view: int) -> dict:
    with_detail = record.detail and view in (model.VIEW_ALL, model.VIEW_DESCRIPTION)
    detail = orjson.loads(record.detail) if with_detail else None
    return model.render_view(orjson.loads(record.summary), detail, view)


def move_to_state(doc: dict, state: str, now_us: int, by: job_states.Actor) -> None:
    """Change the job's state, as the state machine allows `by` (else FAILED_PRECONDITION)."""
    job_states.check(doc["id"], doc.get("currentState"), state, by)
    doc["currentState"] = state
    doc["currentStateTime"] = timestamp(now_us)


def end_job(doc: dict, state: str, now_us: int, write: Write, by: job_states.Actor) -> None:
    """The job's run ends in `state` (its work done, failed or stopped): the messages Dataflow shows."""
    move_to_state(doc, state, now_us, by)
    write.messages = [
        *write.messages,
        job_message(doc["id"], now_us, "JOB_MESSAGE_BASIC", "Stopping worker pool..."),
        job_message(doc["id"], now_us, "JOB_MESSAGE_BASIC", "Worker pool stopped."),
    ]


def retry_on_conflict(attempt: Callable[[], T], doing: str, conflicts: tuple[type[Exception], ...] = ()) -> T:
    """Run `attempt` (read, decide, write under version checks) again while its write meets a concurrent change
    (VersionConflict, or one of `conflicts`): each attempt reads afresh and re-applies the request to what it
    finds. ABORTED after CONFLICT_ATTEMPTS, `doing` saying what ("updating job 123")."""
    retried: tuple[type[Exception], ...] = (VersionConflict, *conflicts)
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            return attempt()
        except retried:
            continue
    raise ApiError("ABORTED", f"Too much contention {doing}; try again.")


def change_job(store: Store, clock, job_id: str, change: Callable[[dict, int, Write], bool]) -> None:
    """Apply `change(doc, now, write) -> bool` to the job with a version check (again on a conflict); False
    means no change. A job that does not exist is left alone."""

    def attempt() -> None:
        job = store.jobs.get(None, job_id)
        if job is None:
            return
        doc, expected, now = document(job), job.version, clock()
        write = Write()
        if not change(doc, now, write):
            return
        record_from_document(doc, job)
        write.changed_jobs = [JobChange(job, expected)]
        commit(store, write)

    retry_on_conflict(attempt, f"changing job {job_id}")


def active_jobs(store: Store) -> Iterator[JobRecord]:
    """Every active job of every project, oldest first (summary only), read a page at a time."""
    after = None
    while page := store.jobs.list_active(ACTIVE_PAGE, after):
        yield from page
        after = page[-1].seq


def close_work_items(store: Store, job_id: str, state: str, now_us: int) -> list[WorkItemChange]:
    """Changes that end the job's open work items in `state` (for the same Write as the job's own change)."""
    changes = []
    for item in store.work_items.list(job_id):
        if item.state in (WORK_PENDING, WORK_LEASED):
            expected = item.version
            item.state, item.end_us = state, now_us
            changes.append(WorkItemChange(item, expected))
    return changes
