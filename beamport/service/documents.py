"""Jobs as stored documents: records to and from their Google-JSON form, messages, lookups."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from beamport import wire
from beamport.errors import not_found
from beamport.service import model
from beamport.store.base import Store, Write
from beamport.store.jobs import JobRecord
from beamport.store.messages import MessageRecord
from beamport.store.work_items import WORK_LEASED, WORK_PENDING, WorkItemChange

ACTIVE_PAGE = 1000  # active jobs read at a time


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
    active = doc.get("currentState") not in model.TERMINAL_STATES
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
        where = f" in location {location}" if location else ""
        raise not_found(
            f"Information about job {job_id}{where} could not be found in our system. "
            "Please double check that the id is correct."
        )
    return record


def render_job(record: JobRecord, view: int) -> dict:
    with_detail = record.detail and view in (model.VIEW_ALL, model.VIEW_DESCRIPTION)
    detail = orjson.loads(record.detail) if with_detail else None
    return model.render_view(orjson.loads(record.summary), detail, view)


def move_to_state(doc: dict, state: str, now_us: int) -> None:
    doc["currentState"] = state
    doc["currentStateTime"] = timestamp(now_us)


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
