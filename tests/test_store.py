"""The store's queries at the service layer, on both backends: what they answer (against a plain reading of the
rows) when they filter, count and page in SQL (messages, the lease's fair-share choice among many pending items,
held and waiting work, live and overdue workers); and the migration that added their indexes."""

from __future__ import annotations

import contextlib
import random

import orjson
import pytest
from conftest import new_postgres_database
from sqlalchemy import event, text

from beamport.errors import ApiError
from beamport.service import model
from beamport.service.documents import job_message, record_from_document
from beamport.service.jobs import JobService
from beamport.service.leases import LeaseService
from beamport.store import open_store
from beamport.store.base import Write
from beamport.store.jobs import projects_statement
from beamport.store.sql import SqlStore
from beamport.store.work_items import WORK_LEASED, WORK_PENDING, WorkItemRecord
from beamport.store.workers import (
    WORKER_IDLE,
    WORKER_LIVE_STATES,
    WORKER_LOST,
    WORKER_RUNNING,
    WORKER_UNHEALTHY,
    WorkerRecord,
)

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
        # Migration 0010 filled the waiting work from the pending items (every one here).
        assert _waiting_work(migrated) == _waiting_work_of_the_rows(migrated)
        assert set(_waiting_work(migrated)) == {("p", REGION), ("q", "europe-west1")}
    finally:
        migrated.close()


def test_new_work_items_carry_their_jobs_place(store):
    record = record_from_document(_job_doc("job-a", "proj", "asia-east1"))
    item = WorkItemRecord(job_id=record.id)
    store.write(Write(new_jobs=[record], new_work_items=[item]))
    stored = store.work_items.get(item.id)
    assert (stored.project_id, stored.location) == ("proj", "asia-east1")


# -- leasing: the fair-share choice among many pending work items -----------------------------------------------------


def _seed_jobs(store, specs) -> list[str]:
    """Jobs written straight to the store, one Write: (project, location, state, work item state)."""
    records, items = [], []
    for n, (project, location, state, item_state) in enumerate(specs):
        record = record_from_document(_job_doc(f"{project}-{location}-{n}", project, location, currentState=state))
        records.append(record)
        if item_state is not None:
            leased = item_state == WORK_LEASED
            items.append(
                WorkItemRecord(
                    job_id=record.id,
                    state=item_state,
                    worker_id=f"holder-{n}" if leased else None,
                    lease_expire_us=4_000_000_000_000_000 if leased else None,
                )
            )
    store.write(Write(new_jobs=records, new_work_items=items))
    return [r.id for r in records]


def _expected_lease(store, project=None, location=None, projects=None) -> int | None:
    """The rule, on a plain reading of every row: among the projects with pending work (matching the filters),
    the one with the fewest leased items, then the one whose oldest pending item is oldest; its oldest pending
    item whose job is active and not being cancelled."""
    with store.engine.connect() as conn:
        items = conn.execute(text("SELECT id, job_id, state FROM work_items")).all()
        jobs = {row.id: row for row in conn.execute(text("SELECT id, project_id, location, active, summary FROM jobs"))}

    def matches(job) -> bool:
        return (
            (project is None or job.project_id == project)
            and (location is None or job.location == location)
            and (projects is None or job.project_id in projects)
        )

    leased, oldest, leasable = {}, {}, {}
    for item_id, job_id, state in sorted(items):
        job = jobs[job_id]
        if state == WORK_LEASED:
            leased[job.project_id] = leased.get(job.project_id, 0) + 1
        if state != WORK_PENDING or not matches(job):
            continue
        oldest.setdefault(job.project_id, item_id)
        stopping = orjson.loads(job.summary).get("currentState") == model.CANCELLING
        if job.active and not stopping:
            leasable.setdefault(job.project_id, item_id)
    for name in sorted(oldest, key=lambda p: (leased.get(p, 0), oldest[p])):
        if name in leasable:
            return leasable[name]
    return None


def test_leases_follow_the_fair_share_rule_among_many_pending_items(store):
    clock = Clock()
    leases = LeaseService(store, clock=clock)
    specs = [("flood", REGION, model.PENDING, WORK_PENDING)] * 300  # the oldest: a project that queued hundreds
    specs += [("flood", REGION, model.RUNNING, WORK_LEASED)]
    specs += [("small", REGION, model.CANCELLING, WORK_PENDING)]  # its oldest pending item: never leased
    specs += [("small", REGION, model.PENDING, WORK_PENDING)] * 3
    specs += [("tiny", REGION, model.DONE, WORK_PENDING)]  # a stray pending item of a job that ended
    specs += [("tiny", "europe-west1", model.PENDING, WORK_PENDING)]
    specs += [("busy", REGION, model.RUNNING, WORK_LEASED)] * 2 + [("busy", REGION, model.PENDING, WORK_PENDING)] * 5
    specs += [("other", "europe-west1", model.PENDING, WORK_PENDING)] * 4
    _seed_jobs(store, specs)

    def lease(n: int, project="-", location="-", projects=None) -> int | None:
        answer = leases.lease(project, location, "-", {"workerId": f"w-{n}"}, projects=projects)
        return int(answer["workItems"][0]["id"]) if answer else None

    leased = []
    for n in range(40):
        expected = _expected_lease(store)
        got = lease(n)
        assert got == expected, n
        leased.append(got)
    # The flood's backlog held no one back: the projects with nothing running came first, in the order of their
    # oldest waiting work, then the flood (1 running), then busy (2 running) once the others ran 2 too.
    with store.engine.connect() as conn:
        project_of = dict(conn.execute(text("SELECT id, project_id FROM work_items")).all())
    first = {}
    for position, item_id in enumerate(leased):
        first.setdefault(project_of[item_id], position)
    assert first == {"small": 0, "tiny": 1, "other": 2, "flood": 3, "busy": 8}

    # Filters: a location, a project, the projects a worker may take; and nothing when nothing matches.
    for n, (project, location, projects) in enumerate(
        [
            (None, "europe-west1", None),
            ("flood", None, None),
            (None, None, {"busy", "small"}),
            (None, REGION, {"other"}),
            (None, None, set()),
        ]
    ):
        expected = _expected_lease(store, project, location, projects)
        got = lease(100 + n, project or "-", location or "-", projects)
        assert got == expected, (project, location, projects)
    assert lease(200, "nobody") is None


def _waiting_work(store) -> dict[tuple[str, str], int]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT project_id, location, oldest_id FROM waiting_work")).all()
    return {(project, location): oldest for project, location, oldest in rows}


def _waiting_work_of_the_rows(store) -> dict[tuple[str, str], int]:
    """What waiting_work must hold, read from the work items themselves."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT project_id, location, min(id) FROM work_items WHERE state = 'PENDING' "
                "GROUP BY project_id, location"
            )
        ).all()
    return {(project, location): oldest for project, location, oldest in rows}


def test_the_waiting_work_table_stays_exact_through_adds_leases_requeues_and_cancels(store):
    """waiting_work (the lease's choice reads it) is kept in the transaction of each work item's change: after
    every step it is what a GROUP BY over the pending work items says."""
    clock = Clock()
    leases = LeaseService(store, clock=clock)
    jobs = JobService(store, clock=clock)

    def exact(step: str) -> None:
        assert _waiting_work(store) == _waiting_work_of_the_rows(store), step

    specs = [("a", REGION, model.PENDING, WORK_PENDING)] * 3 + [("b", "europe-west1", model.PENDING, WORK_PENDING)]
    specs += [("a", "europe-west1", model.PENDING, WORK_PENDING), ("c", REGION, model.RUNNING, WORK_LEASED)]
    ids = _seed_jobs(store, specs)
    exact("seeded")
    assert set(_waiting_work(store)) == {("a", REGION), ("b", "europe-west1"), ("a", "europe-west1")}
    taken = []
    for n in range(4):  # each lease takes a place's oldest item: its row moves on, or goes with its last item
        answer = leases.lease("-", "-", "-", {"workerId": f"w-{n}"})
        taken.append(int(answer["workItems"][0]["id"]))
        exact(f"lease {n}")
    assert leases.release_work("w-0", "it went away") == 1  # put back: its place's oldest again
    exact("re-queued")
    leases.lease("a", REGION, "-", {"workerId": "w-9"})
    exact("leased again")
    for n in (1, 2):
        leases.release_work(f"w-{n}", "lost")
        exact(f"re-queued {n}")
    jobs.create_job("a", REGION, {"name": "later"})  # a new job's pending item, behind the others
    exact("created")
    for job_id in ids[:2]:  # cancelled: a pending item and a leased one end
        jobs.update_job("a", REGION, job_id, {"requestedState": "JOB_STATE_CANCELLED"})
        exact(f"cancelled {job_id}")
    while leases.lease("-", "-", "-", {"workerId": "w-drain"}):
        exact("drained")
    assert _waiting_work(store) == {}


def test_the_waiting_work_table_stays_exact_with_concurrent_writers(tmp_path):
    """On PostgreSQL, several servers may share the database: writers that at the same time add pending work to a
    project, lease its oldest item, cancel the next ones and put leased work back (READ COMMITTED) leave
    waiting_work exact. (Without the lock of the place's row before its minimum is read again, a cancel next to a
    lease left a stale oldest_id in every run.)"""
    import threading

    store = open_store(new_postgres_database(), tmp_path)
    try:
        clock = Clock()
        leases = LeaseService(store, clock=clock)
        jobs = JobService(store, clock=clock)
        seeded = _seed_jobs(store, [("p", REGION, model.PENDING, WORK_PENDING)] * 40)
        failures: list[BaseException] = []
        start = threading.Barrier(7)

        def run(task) -> None:
            try:
                start.wait()
                task()
            except BaseException as exc:  # reported by the test's thread
                failures.append(exc)

        def adder(n: int) -> None:
            for k in range(15):
                jobs.create_job("p", REGION if k % 3 else "europe-west1", {"name": f"added-{n}-{k}"})

        def leaser(n: int) -> None:
            for k in range(10):  # 30 leases of the 70 items, some put back meanwhile: some stay pending
                leases.lease("p", "-", "-", {"workerId": f"w-{n}-{k}"})

        def canceller() -> None:  # while the leases take the oldest items, the next ones end
            for job_id in seeded[1::2]:
                with contextlib.suppress(ApiError):  # it ended meanwhile
                    jobs.update_job("p", REGION, job_id, {"requestedState": "JOB_STATE_CANCELLED"})

        def requeuer() -> None:
            for _ in range(10):
                for worker_id in {item.worker_id for item in store.work_items.list_leased()}:
                    leases.release_work(worker_id, "lost", counts=False)

        tasks = [lambda: adder(0), lambda: adder(1), lambda: leaser(0), lambda: leaser(1), lambda: leaser(2)]
        threads = [threading.Thread(target=run, args=(task,)) for task in [*tasks, canceller, requeuer]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        assert _waiting_work(store) == _waiting_work_of_the_rows(store) != {}
        while leases.lease("-", "-", "-", {"workerId": "w-drain"}):
            pass
        assert _waiting_work(store) == _waiting_work_of_the_rows(store) == {}
    finally:
        store.close()


def test_a_lease_commits_without_waiting_for_the_disk_and_a_new_job_waits(store, store_url):
    """A lease is the one write whose loss in a machine crash leaves nothing wrong (its item is pending again), so
    its commit does not wait for the disk: the setting in force inside its transaction says so; a new job's does."""
    postgres = store_url.startswith("postgresql")
    show = "SHOW synchronous_commit" if postgres else "PRAGMA synchronous"
    seen = {}

    def setting(conn) -> str:
        value = str(conn.exec_driver_sql(show).scalar())
        return {"1": "NORMAL", "2": "FULL"}.get(value, value)

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn, cursor, statement, params, context, executemany):
        if statement.startswith("UPDATE work_items") and not conn.info.get("checking"):
            conn.info["checking"] = True
            try:
                seen["lease"] = setting(conn)
            finally:
                conn.info["checking"] = False

    _seed_jobs(store, [("p", REGION, model.PENDING, WORK_PENDING)])
    assert LeaseService(store, clock=Clock()).lease("-", "-", "-", {"workerId": "w"})
    assert seen["lease"] == ("off" if postgres else "NORMAL")
    with store.db.writing() as conn:
        assert setting(conn) == ("on" if postgres else "FULL")


def test_sqlites_wal_is_copied_into_the_database_by_the_stores_thread_not_by_a_commit(tmp_path):
    """No commit copies the WAL into the database file (inside a lease that made its p99): the store's thread
    does, soon after writes. Seen from the file alone: a copy of it without the WAL holds the rows once copied."""
    import shutil
    import sqlite3
    import time

    store = open_store(None, tmp_path)
    try:
        with store.db.writing() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        records = [record_from_document(_job_doc(f"job-{n:04d}")) for n in range(300)]
        for record in records:
            store.write(Write(new_jobs=[record]))

        def in_the_file_alone() -> int:
            copy = tmp_path / "copy.db"
            shutil.copyfile(tmp_path / "beamport.db", copy)
            with contextlib.closing(sqlite3.connect(copy)) as alone:
                try:
                    return alone.execute("SELECT count(*) FROM jobs").fetchone()[0]
                except sqlite3.OperationalError:  # not even the schema copied yet
                    return 0

        deadline = time.monotonic() + 30
        while in_the_file_alone() < len(records) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert in_the_file_alone() == len(records), "the WAL was not copied into the database file"
    finally:
        store.close()


def test_a_write_into_a_wal_deleted_and_recreated_is_refused_as_the_database_gone(tmp_path):
    """A deleted WAL that another connection recreated has a path that exists, and the open files are looked at
    at most once a second: SQLite's own error ("disk I/O error") is then said as what it is, the database gone
    (503, tests/test_bad_input.py), not an internal error."""
    import os
    import sqlite3

    store = open_store(None, tmp_path)
    try:
        store.write(Write(new_jobs=[record_from_document(_job_doc("before"))]))
        database = store.db.file
        assert database is not None
        os.unlink(database.wal)
        with contextlib.closing(sqlite3.connect(database.path)) as other, pytest.raises(sqlite3.OperationalError):
            other.execute("SELECT count(*) FROM jobs").fetchall()  # it recreates the WAL, and fails
        assert os.path.exists(database.wal)
        database._next_scan = float("inf")  # as if the open files were looked at a moment ago
        with pytest.raises(ApiError) as gone:
            store.write(Write(new_jobs=[record_from_document(_job_doc("after"))]))
        assert gone.value.status == "UNAVAILABLE" and "database is gone" in gone.value.message
    finally:
        store.close()


def test_held_and_waiting_work_are_found_by_index(store):
    clock = Clock()
    leases = LeaseService(store, clock=clock)
    ids = _seed_jobs(store, [("p", REGION, model.PENDING, WORK_PENDING)] * 30)
    taken = [leases.lease("-", "-", "-", {"workerId": f"w-{n % 3}"})["workItems"][0] for n in range(9)]
    assert leases.busy_workers() == {"w-0", "w-1", "w-2"}
    # Waiting work, oldest first, every item (no cap).
    assert leases.waiting_jobs() == ids[9:]
    held = store.work_items.list_leased("w-1")
    assert [item.id for item in held] == sorted(int(t["id"]) for t in taken[1::3])
    assert leases.release_work("w-1", "it went away") == 3
    assert leases.busy_workers() == {"w-0", "w-2"}
    assert sorted(leases.waiting_jobs()) == sorted(ids[9:] + [item.job_id for item in held])

    # Leases not renewed expire, once the server's restart grace has passed.
    clock.now_us += 30 * 60 * 1_000_000
    assert [item.worker_id for item in store.work_items.list_leased(expired_before_us=clock.now_us)] == [
        "w-0",
        "w-2",
        "w-0",
        "w-2",
        "w-0",
        "w-2",
    ]
    leases.expire_leases()
    assert leases.busy_workers() == set() and len(leases.waiting_jobs()) == 30


def test_live_workers_are_counted_and_the_overdue_found_in_sql(store):
    now = 1_900_000_000_000_000
    second = 1_000_000
    rows = [
        # (id, state, last seen, last health, report interval)
        ("fresh", WORKER_RUNNING, now - 1 * second, now - 1 * second, 5 * second),
        ("late", WORKER_RUNNING, now - 20 * second, now - 16 * second, 5 * second),
        ("seen-recently", WORKER_UNHEALTHY, now - 2 * second, now - 60 * second, 5 * second),
        ("never-reported", WORKER_RUNNING, now - 16 * second, None, 5 * second),
        ("slow-interval", WORKER_RUNNING, now - 100 * second, None, 60 * second),
        ("idle-late", WORKER_IDLE, now - 30 * second, None, 2 * second),
        ("gone", WORKER_LOST, now - 999 * second, None, 1 * second),
    ]
    store.write(
        Write(
            workers=[
                WorkerRecord(wid, "p", REGION, "j", state, "{}", now - 3600 * second, seen, interval, last_health_us=h)
                for wid, state, seen, h, interval in rows
            ]
        )
    )
    assert store.workers.count((WORKER_RUNNING, WORKER_UNHEALTHY)) == 5
    assert store.workers.count(WORKER_LIVE_STATES) == 6
    overdue = store.workers.list_overdue(WORKER_LIVE_STATES, 3, now)
    expected = [
        wid
        for wid, state, seen, health, interval in sorted(rows, key=lambda row: -row[2])
        if state in WORKER_LIVE_STATES and max(health or 0, seen) + 3 * interval < now
    ]
    assert [w.worker_id for w in overdue] == expected == ["never-reported", "late", "idle-late"]


def test_projects_with_jobs_are_listed_newest_job_first_from_the_index(store, store_url):
    """The console's projects (GET /beamport/v1/projects): each project with jobs once, with its newest job's
    create time, the project of the newest job first; only the projects asked for; read from an index (only
    the newest job's row of each project is read)."""
    clock = Clock()
    jobs = JobService(store, clock=clock)
    created = {}
    for project, location in [("a", REGION), ("b", "europe-west1"), ("a", "asia-east1"), ("c", REGION), ("b", REGION)]:
        created[project] = jobs.create_job(project, location, {"name": f"j{len(created)}-{location}"})["createTime"]
    listed = jobs.list_projects(None)["projects"]
    assert listed == [
        {"projectId": "b", "latestJobCreateTime": created["b"]},
        {"projectId": "c", "latestJobCreateTime": created["c"]},
        {"projectId": "a", "latestJobCreateTime": created["a"]},
    ]
    assert [p["projectId"] for p in jobs.list_projects({"a", "c", "nobody"})["projects"]] == ["c", "a"]
    assert jobs.list_projects(set()) == {"projects": []}
    # Every project's newest seq from an index on (project_id, ..., seq), never a scan of the table: SQLite reads
    # the index alone; PostgreSQL (told not to scan a table this small) may visit rows the visibility map of so
    # young a table does not vouch for, and with 5 rows its costs tie between the indexes that lead with
    # project_id (it took ix_jobs_request once): any of those, never the table.
    for project_ids in (None, {"a", "c"}):
        with store.engine.connect() as conn:
            sql = projects_statement(project_ids).compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            if store_url.startswith("sqlite"):
                plan = " ".join(row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
                assert "jobs USING COVERING INDEX ix_jobs_project_" in plan, plan
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(row[0] for row in conn.execute(text(f"EXPLAIN {sql}")))
                assert (" ix_jobs_project_" in plan or " ix_jobs_request " in plan) and "Seq Scan" not in plan, plan


def test_the_head_revision_is_alembics_and_a_migrated_store_is_at_it(store_url):
    """migrate() skips Alembic when the schema is at head_revision(), which must therefore be Alembic's head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from beamport.store.sql import MIGRATIONS, head_revision

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_heads() == [head_revision()]
    store = SqlStore(store_url)
    try:
        store.migrate()
        assert store._revision() == head_revision()
        store.migrate()  # at head: nothing to do
        assert store._revision() == head_revision()
    finally:
        store.close()


def test_a_new_databases_schema_is_the_migrations(tmp_path):
    """A new database gets tables.py's schema at once (no Alembic): the same tables, columns, types and indexes
    as the migrations make, one by one, on a database Alembic upgrades from nothing."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    from beamport.store.sql import MIGRATIONS, head_revision
    from beamport.store.tables import metadata

    created = SqlStore(f"sqlite:///{tmp_path / 'created.db'}")
    migrated = SqlStore(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        created.migrate()
        assert created._revision() == head_revision()
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with migrated._writer.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        for store in (created, migrated):
            with store.engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, metadata) == []
        with created.engine.connect() as a, migrated.engine.connect() as b:
            query = text("SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
            assert a.execute(query).all() == b.execute(query).all()
    finally:
        created.close()
        migrated.close()
