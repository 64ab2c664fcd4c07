"""The store's queries at the service layer, on both backends: what they answer (against a plain reading of the
rows) when they filter, count and page in SQL; and the migration that added their indexes."""

from __future__ import annotations

import random

import orjson
import pytest
from conftest import new_postgres_database
from sqlalchemy import text

from beamport.service import model
from beamport.service.documents import job_message, record_from_document
from beamport.service.jobs import JobService
from beamport.store import open_store
from beamport.store.base import Write
from beamport.store.sql import SqlStore
from beamport.store.work_items import WorkItemRecord

REGION = "us-central1"


class Clock:
    def __init__(self, now_us: int = 1_800_000_000_000_000):
        self.now_us = now_us

    def __call__(self) -> int:
        self.now_us += 1
        return self.now_us


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    return new_postgres_database() if request.param == "postgres" else f"sqlite:///{tmp_path / 'beamport.db'}"


@pytest.fixture
def store(store_url, tmp_path):
    opened = open_store(store_url, tmp_path)
    yield opened
    opened.close()


def _job_doc(job_id: str, project: str = "p", location: str = REGION, **fields) -> dict:
    stamp = "2027-01-15T08:00:00Z"
    return {
        "id": job_id,
        "projectId": project,
        "location": location,
        "name": f"job-{job_id}",
        "type": model.BATCH,
        "currentState": model.PENDING,
        "currentStateTime": stamp,
        "createTime": stamp,
        **fields,
    }


# -- messages.list --------------------------------------------------------------------------------------------------


def test_message_pages_by_time_and_importance_are_what_the_rows_say(store):
    """Every combination of time range, minimum importance and page size pages through exactly the messages a
    plain reading of the job's rows selects, in order, once each."""
    clock = Clock()
    jobs = JobService(store, clock=clock)
    job = jobs.create_job("p", REGION, {"name": "chatty"})
    rng = random.Random(7)
    names = model.IMPORTANCE_ORDER
    stored = []
    for batch in range(30):  # times repeat and jump, as they do (several messages of one write share a time)
        at = clock.now_us + rng.choice([0, 1, 5_000_000])
        clock.now_us = at
        notes = [(rng.choices(names, [10, 45, 35, 8, 2])[0], f"m{batch}-{i}") for i in range(rng.randint(1, 12))]
        store.write(Write(messages=[job_message(job["id"], at, importance, text) for importance, text in notes]))
        stored += [(at, model.IMPORTANCE_RANK[importance], text) for importance, text in notes]
    times = sorted({at for at, _, _ in stored})

    def listed(**query) -> list[str]:
        texts, token = [], None
        while True:
            page = jobs.list_messages("p", REGION, job["id"], page_token=token, **query)
            texts += [m["messageText"] for m in page.get("jobMessages", [])]
            token = page.get("nextPageToken")
            if not token:
                return texts

    for _ in range(40):
        start = rng.choice([None, *times])
        end = rng.choice([None, *times, times[-1] + 1])
        rank = rng.randrange(5)
        size = rng.choice([2, 7, 100])
        minimum = model.JobMessageImportance.values_by_name[names[rank]].number if rank else 0
        expected = [
            t for at, r, t in stored if r >= rank and (start is None or at >= start) and (end is None or at < end)
        ]
        got = listed(start_us=start, end_us=end, minimum_importance=minimum, page_size_=size)
        assert got == expected, (start, end, rank, size)


# -- the migration of indexed queries (0008) ------------------------------------------------------------------------


def test_migration_fills_the_new_columns_from_what_was_stored(store_url, tmp_path):
    """A database at revision 0007 (before the columns existed) gets each job's createdFromSnapshotId and each work
    item's project and location from the stored rows."""
    from alembic import command
    from alembic.config import Config

    from beamport.store.sql import MIGRATIONS

    old = SqlStore(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old._writer.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
    with old._writer.begin() as connection:
        for n, (project, location, snapshot) in enumerate(
            [("p", REGION, "snap-1"), ("q", "europe-west1", None), ("p", REGION, None)]
        ):
            doc = _job_doc(f"job-{n}", project, location)
            if snapshot:
                doc["createdFromSnapshotId"] = snapshot
            record = record_from_document(doc)
            connection.execute(
                text(
                    "INSERT INTO jobs (id, project_id, location, name, client_request_id, active, create_us, version, "
                    "summary, detail) VALUES (:id, :project, :location, :name, '', :active, 1, 1, :summary, '{}')"
                ),
                {
                    "id": record.id,
                    "project": project,
                    "location": location,
                    "name": record.name,
                    "active": True,
                    "summary": record.summary,
                },
            )
            connection.execute(
                text(
                    "INSERT INTO work_items (job_id, state, attempt, next_report_index, version, failures) "
                    "VALUES (:id, 'PENDING', 1, 1, 1, '[]')"
                ),
                {"id": record.id},
            )
    old.close()
    assert (
        '"createdFromSnapshotId":"snap-1"'
        in record_from_document(_job_doc("x", createdFromSnapshotId="snap-1")).summary
    )  # the summary's form the migration reads

    migrated = open_store(store_url, tmp_path)
    try:
        with migrated.engine.connect() as conn:
            snapshots = dict(conn.execute(text("SELECT id, created_from_snapshot_id FROM jobs")).all())
            places = {
                row.job_id: (row.project_id, row.location)
                for row in conn.execute(text("SELECT job_id, project_id, location FROM work_items"))
            }
        assert snapshots == {"job-0": "snap-1", "job-1": "", "job-2": ""}
        assert places == {"job-0": ("p", REGION), "job-1": ("q", "europe-west1"), "job-2": ("p", REGION)}
        found = migrated.jobs.list_active_from_snapshot("p", "snap-1")
        assert [job.id for job in found] == ["job-0"]
        assert orjson.loads(found[0].summary)["createdFromSnapshotId"] == "snap-1"
    finally:
        migrated.close()


def test_new_work_items_carry_their_jobs_place(store):
    record = record_from_document(_job_doc("job-a", "proj", "asia-east1"))
    item = WorkItemRecord(job_id=record.id)
    store.write(Write(new_jobs=[record], new_work_items=[item]))
    stored = store.work_items.get(item.id)
    assert (stored.project_id, stored.location) == ("proj", "asia-east1")
