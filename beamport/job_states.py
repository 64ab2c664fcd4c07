"""A job's states as a declared state machine: Dataflow's JOB_STATE_* values, which of them are terminal, the
transitions between them and who may cause each.

Every change of a job's state goes through `check` (service/documents.py move_to_state): a transition that is
not declared here is refused (FAILED_PRECONDITION), whoever asks. The API's checks of a client's requests, the
services' handling of leases, work reports and worker message codes, the CLI (waiting for a job to end) and
the console (which actions a job offers, GET /beamport/v1/jobStates) all read this module. It imports nothing
but the errors, so the CLI and the workers can use it without the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from beamport.errors import failed_precondition

PENDING = "JOB_STATE_PENDING"
QUEUED = "JOB_STATE_QUEUED"
RUNNING = "JOB_STATE_RUNNING"
STOPPED = "JOB_STATE_STOPPED"
DONE = "JOB_STATE_DONE"
FAILED = "JOB_STATE_FAILED"
CANCELLING = "JOB_STATE_CANCELLING"
CANCELLED = "JOB_STATE_CANCELLED"
DRAINING = "JOB_STATE_DRAINING"
DRAINED = "JOB_STATE_DRAINED"
UPDATED = "JOB_STATE_UPDATED"

# What each state means here, in the order a job goes through them.
STATES = {
    PENDING: "created; its work waits for a worker, or a worker is starting it on its engine",
    QUEUED: "its work waits because every local worker is busy",
    STOPPED: "not started (Dataflow's; Beamport does not put jobs in it)",
    RUNNING: "its engine runs it",
    DRAINING: "a client asked to drain it: its sources stop reading, its windows fire and flush",
    CANCELLING: "a client asked to cancel it: its worker stops it",
    DONE: "its work completed",
    FAILED: "its work failed (four times, or in a way another attempt would meet again), or it could not take over the "
    "state of the job it updates",
    CANCELLED: "cancelled",
    DRAINED: "drained",
    UPDATED: "replaced by another job (replaceJobId); replacedByJobId names it",
}
TERMINAL_STATES = frozenset({DONE, FAILED, CANCELLED, DRAINED, UPDATED})
ACTIVE_STATES = frozenset(STATES) - TERMINAL_STATES
# Active, but no work has started: stopping such a job needs no engine.
NOT_STARTED_STATES = frozenset({PENDING, QUEUED, STOPPED})


class Actor(StrEnum):
    CLIENT = "client"  # a request through the API: jobs.update's requestedState, a create that replaces a job
    # the service's own decisions: the local pool queues a job, a worker's lease is revoked, an update's swap
    SERVICE = "service"
    WORKER = "worker"  # a job's worker: it leases the work, its engine runs it, it reports the work's end


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str
    by: frozenset[Actor]
    cause: str


def _transition(sources, target: str, by, cause: str) -> Transition:
    return Transition(frozenset(sources), target, frozenset(by if isinstance(by, tuple) else (by,)), cause)


_STOPPABLE = ACTIVE_STATES - {CANCELLING}  # a cancel, once committed, is not undone by a drain or the work's end
TRANSITIONS = (
    _transition({PENDING}, QUEUED, Actor.SERVICE, "every local worker is busy (beamport serve --workers)"),
    _transition({QUEUED}, PENDING, Actor.WORKER, "a worker leases the job's work"),
    _transition(NOT_STARTED_STATES, RUNNING, Actor.WORKER, "the job's engine runs it (BEAMPORT_ENGINE_RUNNING)"),
    _transition(_STOPPABLE - {DRAINING}, DONE, Actor.WORKER, "the worker reports its work completed"),
    _transition({DRAINING}, DRAINED, Actor.WORKER, "the worker reports its work completed, flushed"),
    _transition(
        _STOPPABLE,
        FAILED,
        (Actor.WORKER, Actor.SERVICE),
        "its work failed for the 4th time, or for good (the worker's report, or its lease revoked); the update it "
        "makes could not take over the old job's state",
    ),
    _transition(_STOPPABLE, CANCELLING, Actor.CLIENT, "cancel, while a worker holds the job's work"),
    _transition(_STOPPABLE, CANCELLED, Actor.CLIENT, "cancel, while no worker holds the job's work"),
    _transition(
        {CANCELLING},
        CANCELLED,
        (Actor.WORKER, Actor.SERVICE),
        "the worker is told to stop at its next report, or its lease is revoked",
    ),
    _transition(_STOPPABLE - {DRAINING}, DRAINING, Actor.CLIENT, "drain a streaming job that has started"),
    _transition(NOT_STARTED_STATES, DRAINED, Actor.CLIENT, "drain a streaming job that has not started"),
    _transition(ACTIVE_STATES, UPDATED, Actor.CLIENT, "a new job replaces it (jobs.create with replaceJobId)"),
    _transition(
        {RUNNING},
        UPDATED,
        Actor.SERVICE,
        "its state was saved for the job that replaces it, which starts from it (an update that carries state)",
    ),
)
_ALLOWED = {(source, t.target, actor) for t in TRANSITIONS for source in t.sources for actor in t.by}


def is_terminal(state: str | None) -> bool:
    return state in TERMINAL_STATES


def allows(state: str | None, target: str, by: Actor) -> bool:
    """Whether `by` may move a job from `state` to `target`."""
    return (state, target, by) in _ALLOWED


def check(job_id: str, state: str | None, target: str, by: Actor) -> None:
    """Refuse a transition the machine does not declare."""
    if not allows(state, target, by):
        raise failed_precondition(f"Job {job_id} is in {state}: a {by} cannot move it to {target}.")


@dataclass(frozen=True)
class Action:
    """What a client may request of an active job through jobs.update's requestedState."""

    name: str
    requested_state: str  # the requestedState the job then shows (and the console sends)
    accepted: frozenset[str]  # the requestedState values that ask for it
    underway: str  # the state while a worker stops the job's work; requesting it again changes nothing
    at_once: str  # the state when nothing needs stopping
    streaming_only: bool
    done: str  # "cancelled": for messages


CANCEL = Action("cancel", CANCELLED, frozenset({CANCELLED}), CANCELLING, CANCELLED, False, "cancelled")
# Beam's DataflowRunner asks for DRAINING, gcloud for DRAINED.
DRAIN = Action("drain", DRAINED, frozenset({DRAINED, DRAINING}), DRAINING, DRAINED, True, "drained")
ACTIONS = (CANCEL, DRAIN)


def action_for(requested: str) -> Action | None:
    return next((action for action in ACTIONS if requested in action.accepted), None)


def offers(action: Action, state: str | None) -> bool:
    """Whether requesting `action` of a job in `state` would change it."""
    return state != action.underway and (
        allows(state, action.underway, Actor.CLIENT) or allows(state, action.at_once, Actor.CLIENT)
    )


def describe() -> dict:
    """The machine as JSON, for the console (GET /beamport/v1/jobStates)."""
    return {
        "states": [
            {
                "state": state,
                "description": text,
                "terminal": state in TERMINAL_STATES,
                "actions": [action.name for action in ACTIONS if offers(action, state)],
            }
            for state, text in STATES.items()
        ],
        "transitions": [
            {"from": sorted(t.sources), "to": t.target, "by": sorted(t.by), "cause": t.cause} for t in TRANSITIONS
        ],
        "actions": [
            {"action": a.name, "requestedState": a.requested_state, "streamingOnly": a.streaming_only} for a in ACTIONS
        ],
    }
