"""Concurrent requests never break the rules: one active job per name, legal transitions only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import Api


def test_concurrent_creates_with_one_name_make_one_job(server, project):
    api = Api(server.url, project)

    def create(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.post(api.jobs_path, json={"name": "racer", "clientRequestId": f"r-{i}"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(create, range(20)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    jobs = api.all_jobs()
    assert [j["id"] for j in jobs] == list(ids)
    # Exactly one request created it: only that one got its own clientRequestId back.
    winners = [r for i, r in enumerate(responses) if r.json()["clientRequestId"] == f"r-{i}"]
    assert len(winners) == 1


def test_concurrent_state_changes_make_one_legal_transition(server, project):
    api = Api(server.url, project)
    jobs = [api.create(f"steer-{n}", type="JOB_TYPE_STREAMING") for n in range(3)]
    requests = ["JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_DRAINING"] * 4

    for job in jobs:

        def update(state: str, job: dict = job) -> httpx.Response:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                return client.put(f"{api.jobs_path}/{job['id']}", json={"requestedState": state})

        with ThreadPoolExecutor(12) as pool:
            responses = list(pool.map(update, requests))
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        # The first change ends the pending job; every later one meets a terminal job.
        assert len(accepted) == 1, [r.text for r in responses]
        assert all(r.status_code == 400 and "terminal state" in r.json()["error"]["message"] for r in refused)
        final = api.get(job["id"]).json()
        assert final["currentState"] == accepted[0].json()["currentState"]
        assert final["currentState"] in ("JOB_STATE_CANCELLED", "JOB_STATE_DRAINED")
        committed = [
            m for m in api.messages(job["id"]).json()["jobMessages"] if "request is committed" in m["messageText"]
        ]
        assert len(committed) == 1


def test_concurrent_label_updates_all_land(server, project):
    api = Api(server.url, project)
    job = api.create("labelled", type="JOB_TYPE_STREAMING")

    def relabel(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return client.put(
                f"{api.jobs_path}/{job['id']}", params={"updateMask": "labels"}, json={"labels": {"n": str(i)}}
            )

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(relabel, range(10)))
    assert all(r.status_code == 200 for r in responses)
    final = api.get(job["id"]).json()["labels"]["n"]
    assert final in {r.json()["labels"]["n"] for r in responses}
