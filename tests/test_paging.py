"""Paging returns every job and message exactly once, newest job first, stable while jobs are added."""

from __future__ import annotations

import pytest
from conftest import Api


@pytest.mark.slow
def test_paging_over_a_thousand_jobs(backend_server, project):
    api = Api(backend_server.url, project)
    created = [api.create(f"job-{n}", type="JOB_TYPE_BATCH")["id"] for n in range(1000)]

    seen, token, pages = [], None, 0
    while True:
        params = {"pageSize": 37, **({"pageToken": token} if token else {})}
        page = api.list(**params).json()
        seen += [j["id"] for j in page["jobs"]]
        pages += 1
        # Jobs created while paging are newer than every page still to come: they never shift the pages.
        api.create(f"late-{pages}")
        token = page.get("nextPageToken")
        if not token:
            break
    assert seen == list(reversed(created))
    assert len(set(seen)) == 1000 and pages == 28

    # The server caps a page; the default page is smaller.
    assert len(api.list(pageSize=5000).json()["jobs"]) == 1000
    assert len(api.list().json()["jobs"]) == 50

    # Across all regions and filtered views too.
    aggregated = []
    token = None
    while True:
        page = api.client.get(
            f"/v1b3/projects/{project}/jobs:aggregated",
            params={"pageSize": 100, "filter": "ACTIVE", **({"pageToken": token} if token else {})},
        ).json()
        aggregated += [j["id"] for j in page["jobs"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert len(aggregated) == len(set(aggregated)) == 1000 + pages
