"""State survives the server: SIGTERM or SIGKILL, then a new server on the same data dir (or database)."""

from __future__ import annotations

import signal

import pytest
from conftest import Api


def everything(api: Api) -> tuple[list, dict]:
    jobs = api.all_jobs(view="JOB_VIEW_ALL")
    return jobs, {j["id"]: api.messages(j["id"]).json() for j in jobs}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_keeps_jobs_messages_and_labels(backend_server, project, sig):
    api = Api(backend_server.url, project)
    kept = api.create(
        "kept",
        type="JOB_TYPE_STREAMING",
        labels={"team": "data"},
        clientRequestId="r-1",
        environment={"tempStoragePrefix": "/tmp/t", "sdkPipelineOptions": {"options": {"x": 1}}},
    )
    cancelled = api.create("cancelled", type="JOB_TYPE_BATCH")
    api.update(cancelled["id"], {"requestedState": "JOB_STATE_CANCELLED"})
    api.update(kept["id"], {"labels": {"team": "ml"}}, updateMask="labels")
    old = api.create("old", type="JOB_TYPE_STREAMING")
    api.create("old", type="JOB_TYPE_STREAMING", replaceJobId=old["id"])
    last = api.create("last-before-kill")  # answered just before the kill: must survive it
    before = everything(api)

    backend_server.stop(sig)
    backend_server.start()

    assert everything(api) == before
    assert api.get(kept["id"]).json()["labels"] == {"team": "ml"}
    assert api.get(last["id"]).status_code == 200
    # The rules still hold on the restored state: the name is still taken, the ids still idempotent.
    assert api.create("kept", clientRequestId="r-2")["id"] == kept["id"]
    assert api.create("kept", clientRequestId="r-1")["id"] == kept["id"]
    assert len(api.all_jobs()) == len(before[0])
