"""The job state machine (beamport/job_states.py): what it declares, that the service refuses what it does not
declare, and the description the console reads (GET /beamport/v1/jobStates)."""

from __future__ import annotations

import pytest

from beamport import job_states
from beamport.errors import ApiError
from beamport.job_states import (
    CANCELLED,
    CANCELLING,
    DONE,
    DRAINED,
    DRAINING,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    UPDATED,
    Actor,
)
from beamport.service.documents import move_to_state


def test_terminal_states_have_no_way_out():
    assert job_states.TERMINAL_STATES == {DONE, FAILED, CANCELLED, DRAINED, UPDATED}
    for transition in job_states.TRANSITIONS:
        assert not transition.sources & job_states.TERMINAL_STATES, transition
        assert transition.sources <= set(job_states.STATES) and transition.target in job_states.STATES


@pytest.mark.parametrize(
    "state,target,by,allowed",
    [
        (PENDING, QUEUED, Actor.SERVICE, True),
        (PENDING, QUEUED, Actor.CLIENT, False),
        (QUEUED, PENDING, Actor.WORKER, True),
        (RUNNING, PENDING, Actor.WORKER, False),
        (PENDING, RUNNING, Actor.WORKER, True),
        (RUNNING, DONE, Actor.CLIENT, False),  # a job is DONE only by finishing its work
        (RUNNING, DONE, Actor.WORKER, True),
        (DRAINING, DONE, Actor.WORKER, False),  # a drained job's work ends it DRAINED
        (DRAINING, DRAINED, Actor.WORKER, True),
        (CANCELLING, DRAINING, Actor.CLIENT, False),  # a committed cancel is not undone
        (CANCELLING, FAILED, Actor.WORKER, False),
        (CANCELLING, CANCELLED, Actor.SERVICE, True),
        (RUNNING, CANCELLED, Actor.CLIENT, True),
        (RUNNING, DRAINED, Actor.CLIENT, False),  # a running job has something to flush
        (RUNNING, UPDATED, Actor.CLIENT, True),
        (RUNNING, UPDATED, Actor.SERVICE, True),  # an update's swap, once the old job's state is saved
        (DRAINING, UPDATED, Actor.SERVICE, False),  # its state is saved of a running job only
        (PENDING, FAILED, Actor.SERVICE, True),  # an update whose new job could not take over
        (DONE, CANCELLED, Actor.CLIENT, False),
    ],
)
def test_who_may_move_a_job_where(state, target, by, allowed):
    assert job_states.allows(state, target, by) is allowed


def test_an_undeclared_change_is_refused():
    doc = {"id": "j", "currentState": DONE, "currentStateTime": "x"}
    with pytest.raises(ApiError) as refused:
        move_to_state(doc, RUNNING, 1_000_000, Actor.WORKER)
    assert refused.value.status == "FAILED_PRECONDITION" and doc["currentState"] == DONE
    move_to_state(doc | {"currentState": QUEUED}, PENDING, 1_000_000, Actor.WORKER)


def test_actions_each_state_offers():
    offered = {s["state"]: s["actions"] for s in job_states.describe()["states"]}
    assert offered[RUNNING] == ["cancel", "drain"] and offered[PENDING] == ["cancel", "drain"]
    assert offered[DRAINING] == ["cancel"] and offered[CANCELLING] == []
    assert all(offered[state] == [] for state in job_states.TERMINAL_STATES)
    assert job_states.action_for(DRAINING) is job_states.action_for(DRAINED) is job_states.DRAIN


def test_the_console_reads_the_machine(api):
    answer = api.client.get("/beamport/v1/jobStates")
    assert answer.status_code == 200, answer.text
    assert answer.json() == job_states.describe()
    actions = {a["action"]: a for a in answer.json()["actions"]}
    assert actions["drain"] == {"action": "drain", "requestedState": DRAINED, "streamingOnly": True}
