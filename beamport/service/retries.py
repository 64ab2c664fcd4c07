"""The retry policy of a job's work: what happens when an attempt of a leased work item ends without finishing.

Dataflow retries a failing batch work item up to 4 times: the 4th failure fails the job. An error another
attempt would meet again (the job cannot run as submitted) fails it at once. An attempt that ends through no
fault of the work (a shutdown notice, a server restart) is not counted. Each attempt that ended early is kept
on the work item (`failures`): the execution details show it, and the worker that lost the work is told why.
A streaming job on an engine that keeps no state (Prism) is not given another attempt at all: it would start
again from its sources' start, silently reading and writing twice what it had done; the job fails saying so.
"""

from __future__ import annotations

import orjson

from beamport.errors import RPC_CODE
from beamport.job_states import FAILED, Actor
from beamport.service.documents import end_job, job_message
from beamport.store.base import Write
from beamport.store.work_items import WORK_FAILED, WORK_PENDING, WorkItemRecord

MAX_FAILURES = 4
# Errors that another attempt would meet again (the job cannot run as submitted): no retry.
PERMANENT_CODES = frozenset(
    RPC_CODE[s] for s in ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION")
)


def failures_of(item: WorkItemRecord) -> list[dict]:
    """The attempts of the work item that ended early, oldest first."""
    return orjson.loads(item.failures or "[]")


def is_permanent(errors: list[dict]) -> bool:
    """Whether a worker's reported errors say that another attempt would fail the same way."""
    return any(e.get("code") in PERMANENT_CODES for e in errors)


def fail_attempt(
    doc: dict,
    item: WorkItemRecord,
    reason: str,
    now: int,
    write: Write,
    by: Actor,
    counts: bool = True,
    permanent: bool = False,
    stateless_engine: str | None = None,
) -> None:
    """The current attempt of a leased work item ended without finishing the work (the worker reported an
    error, or was lost, broken or shut down): lease it again, or fail the job (`by` the worker's report or
    the service) at the 4th counted failure, or at once when the error is permanent or the job's engine keeps
    no state (`stateless_engine`, its title: see engines.starts_over)."""
    job_id, worker = item.job_id, item.worker_id or "unknown"
    failures = failures_of(item)
    failures.append(
        {
            "attempt": item.attempt,
            "worker": worker,
            "reason": reason,
            "counted": counts,
            "startUs": item.start_us,
            "endUs": now,
        }
    )
    item.failures = orjson.dumps(failures).decode()
    counted = [f for f in failures if f.get("counted", True)]
    if permanent or stateless_engine or (counts and len(counted) >= MAX_FAILURES):
        item.state, item.end_us = WORK_FAILED, now
        causes = "\n".join(f"  attempt {f['attempt']} on worker {f['worker']}: {f['reason']}" for f in counted)
        if permanent:
            why = "The job cannot run as submitted; another attempt would fail the same way."
        elif stateless_engine:
            why = stateless_failure(stateless_engine)
        else:
            why = (
                "Workflow failed. Causes: The job failed because a work item has failed "
                f"{MAX_FAILURES} times:\n{causes}"
            )
        write.messages = [
            *write.messages,
            job_message(job_id, now, "JOB_MESSAGE_ERROR", f"Work item {item.id} failed on worker {worker}: {reason}"),
            job_message(job_id, now, "JOB_MESSAGE_ERROR", why),
        ]
        end_job(doc, FAILED, now, write, by)
        return
    item.state, item.worker_id, item.lease_expire_us, item.end_us = WORK_PENDING, None, None, now
    item.attempt += 1
    item.next_report_index, item.progress = 1, None
    left = MAX_FAILURES - len(counted)
    what = f"failed ({len(counted)} of {MAX_FAILURES} failures allowed)" if counts else "stopped"
    write.messages = [
        *write.messages,
        job_message(
            job_id,
            now,
            "JOB_MESSAGE_WARNING" if counts else "JOB_MESSAGE_BASIC",
            f"Work item {item.id} {what} on worker {worker}: {reason}\n"
            f"It will be leased again (attempt {item.attempt}; {left} more failures fail the job).",
        ),
    ]


def stateless_notice(engine: str) -> str:
    """What a streaming job on an engine that keeps no state is told when its work starts."""
    return (
        f"{engine} keeps no state of a streaming job (no checkpoints): if this job's work stops before it ends (its "
        "worker lost, the server restarted), the job fails rather than start again from its sources' start. Flink "
        "keeps it (label beamport_engine=flink): a job there carries on from its last checkpoint."
    )


def stateless_failure(engine: str) -> str:
    return (
        f"The job's work stopped, and {engine} keeps no state of a streaming job: another attempt would start again "
        "from its sources' start, reading and writing again what it had. The job fails instead; run it again, "
        "or on Flink (label beamport_engine=flink), which carries on from its last checkpoint."
    )
