"""Waiting work and the workers waiting for it: which work item a lease takes (fair across projects), and what a
lease says of its worker in the registry (serving a job, or alive and idle).
"""

from __future__ import annotations

from beamport import job_states
from beamport.service.documents import commit, document, load_job
from beamport.store.base import Store, Write
from beamport.store.jobs import JobRecord
from beamport.store.work_items import WORK_LEASED, WORK_PENDING, WorkItemRecord
from beamport.store.workers import (
    WORKER_IDLE,
    WORKER_LIVE_STATES,
    WORKER_REPORTING_STATES,
    WORKER_RUNNING,
    WorkerRecord,
)

ANY = "-"  # AIP-159: a wildcard for the project, location or job of a lease
# A worker waiting for work is heard from at its lease polls: a Beamport worker polls at least every 2.5 s (a
# lease of any job's work waits up to 2 s at the service, http/execution.py). A poll is noted at most once per
# idle interval (the worker's health interval, if longer), and an idle worker is lost after 3 of them.
MIN_IDLE_INTERVAL_US = 2_500_000
_STOP_STATES = (job_states.CANCELLING,)  # a job being stopped starts no more work


def idle_interval_us(worker: WorkerRecord) -> int:
    """How often the service notes the lease polls of a worker waiting for work (see MIN_IDLE_INTERVAL_US)."""
    return max(worker.report_interval_us, MIN_IDLE_INTERVAL_US)


def _takes_work(job: JobRecord | None) -> bool:
    return job is not None and job.active and document(job).get("currentState") not in _STOP_STATES


def next_leasable(
    store: Store, project_id: str, location: str, job_id: str, projects: set[str] | None = None
) -> tuple[JobRecord, WorkItemRecord] | None:
    """The oldest pending work item of the job (or of any job the wildcards match), with its job."""
    if job_id != ANY:
        job = load_job(store, project_id, location, job_id)
        if not _takes_work(job):
            return None
        items = [item for item in store.work_items.list(job_id) if item.state == WORK_PENDING]
        return (job, items[0]) if items else None
    if projects is not None and project_id != ANY and project_id not in projects:
        return None
    where = None if location == ANY else location
    # Fair across projects: among the projects with work this worker may take, the one with the fewest work
    # items running goes first (ties: the one whose waiting work is oldest), and its oldest item; so a
    # project that queues thousands of jobs delays another project's job by one lease at most. One query
    # finds it; if its job is being stopped (or that project's pending work is all of jobs that ended), the
    # projects are gone through in the same order.
    found = store.work_items.next_to_lease(where, projects, None if project_id == ANY else project_id)
    if found is not None and document(found[0]).get("currentState") not in _STOP_STATES:
        return found
    if project_id != ANY:
        candidates = [project_id]
    else:
        waiting = store.work_items.pending_projects(where, projects)
        candidates = [p.project_id for p in sorted(waiting, key=lambda p: (p.leased, p.oldest_id))]
    for project in candidates:
        item = store.work_items.oldest_pending(project, where)
        while item is not None:
            owner = store.jobs.get(project, item.job_id)
            if owner is not None and _takes_work(owner):
                return owner, item
            item = store.work_items.oldest_pending(project, where, after_id=item.id)
    return None


def serving(
    worker: WorkerRecord | None, worker_id: str, job: JobRecord, item: WorkItemRecord, now: int, interval_us: int
) -> WorkerRecord:
    """The registry entry of a worker that has just leased work (`interval_us`: a new worker's report interval)."""
    if worker is None:
        worker = WorkerRecord.first_seen(
            worker_id, job.project_id, job.location, job.id, WORKER_RUNNING, now, interval_us
        )
    worker.project_id, worker.location, worker.job_id = job.project_id, job.location, job.id
    worker.work_item_id, worker.last_seen_us = item.id, now
    # Leasing proves it alive: its health deadline counts from now, not from its last report (which,
    # for a worker that was idle between jobs, may be long past).
    if worker.last_health_us is not None:
        worker.last_health_us = now
    if worker.state not in WORKER_REPORTING_STATES:  # idle, or lost (e.g. cut off) and back
        worker.state, worker.reason = WORKER_RUNNING, ""
    return worker


def note_waiting(
    store: Store,
    worker: WorkerRecord | None,
    worker_id: str,
    project_id: str,
    location: str,
    now: int,
    interval_us: int,
) -> None:
    """A lease poll that found no work: the worker is alive, and IDLE unless it still holds work. Noted at
    most once per idle interval (polls may come many times a second), and at once when its state changes."""
    if worker is None:  # not serving any job yet: bound to the project (and location) it asks work of, if one
        worker = WorkerRecord.first_seen(
            worker_id,
            "" if project_id == ANY else project_id,
            "" if location == ANY else location,
            "",
            WORKER_IDLE,
            now,
            interval_us,
        )
    elif worker.state == WORKER_RUNNING and not _holds_work(store, worker):  # its work ended
        worker.state, worker.reason, worker.last_seen_us = WORKER_IDLE, "", now
    elif worker.state in WORKER_LIVE_STATES:  # an unhealthy one stays so until a health report says otherwise
        if now - worker.last_seen_us < idle_interval_us(worker):
            return
        worker.last_seen_us = now
    else:  # lost (e.g. cut off) or shut down, and back
        worker.state, worker.reason, worker.last_seen_us = WORKER_IDLE, "", now
    commit(store, Write(workers=[worker]))


def _holds_work(store: Store, worker: WorkerRecord) -> bool:
    item = store.work_items.get(worker.work_item_id) if worker.work_item_id else None
    return item is not None and item.state == WORK_LEASED and item.worker_id == worker.worker_id
