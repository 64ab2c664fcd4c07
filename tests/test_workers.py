"""Workers as the service sees them: the registry, health, loss, shutdown, retries, and what they show.

Real `beamport worker` processes run real pipelines against a server that runs no local workers, so each
test decides which workers exist; the service's health interval is 1 s so that losses show within seconds.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import Api, Server, discovery_client
from test_running_jobs import PIPELINES, TEXT, alive_in_group, dataflow_flags, read_output, run, texts, wait_state

pytestmark = pytest.mark.slow


class WorkerProcess:
    """A `beamport worker` started by hand, as on another host: its own data dir, its own id."""

    def __init__(self, server: Server, data_dir: Path, worker_id: str, *args: str):
        self.worker_id = worker_id
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir.parent / f"{worker_id}.log"
        command = [
            sys.executable,
            "-m",
            "beamport",
            "worker",
            "--endpoint",
            server.url,
            "--worker-id",
            worker_id,
            "--data-dir",
            str(data_dir),
            "--allow-path",
            str(data_dir.parent.parent),
            "--poll-interval",
            "0.1",
            *args,
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def signal(self, sig: int) -> None:
        os.killpg(self.process.pid, sig) if sig == signal.SIGKILL else self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def remote(tmp_path_factory) -> Server:
    """A server without local workers, asking workers for a health report every second."""
    base = tmp_path_factory.mktemp("remote")
    srv = Server(
        base / "data", extra_args=("--workers", "0", "--worker-report-interval", "1", "--allow-path", str(base.parent))
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def workers(tmp_path):
    started: list[WorkerProcess] = []

    def start(server: Server, worker_id: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(server, tmp_path / "workers" / worker_id, worker_id, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def listed(server: Server, *args: str) -> dict[str, list[str]]:
    """`beamport workers list ARGS` as a user runs it (no BEAMPORT_* variables): its rows by worker id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMPORT_")}
    done = subprocess.run(
        [sys.executable, "-m", "beamport", "workers", "list", "--endpoint", server.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    header, *rows = done.stdout.splitlines() or [""]
    assert not rows or header.split() == [
        "WORKER_ID",
        "JOB_ID",
        "STATE",
        "HEALTH",
        "CPU",
        "UPTIME",
        "WORK_ITEM",
        "LAST_REPORT",
    ], done.stdout
    return {row.split()[0]: row.split() for row in rows}


# One client for the registry's readers, which tests call in loops (an httpx.get makes a client each time: tens of
# milliseconds of CPU for its TLS context).
HTTP = httpx.Client(timeout=30)


def registry(server: Server, job_id: str | None = None, include_gone: bool = True) -> dict[str, dict]:
    params = {"all": "true" if include_gone else "false", **({"jobId": job_id} if job_id else {})}
    return {w["workerId"]: w for w in HTTP.get(f"{server.url}/beamport/v1/workers", params=params).json()["workers"]}


def worker_detail(server: Server, worker_id: str) -> dict:
    return HTTP.get(f"{server.url}/beamport/v1/workers/{worker_id}").json()


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_on(server: Server, api: Api, job_id: str, worker_id: str) -> None:
    """Wait until the worker runs a stage of the job."""

    def ready():
        job = api.get(job_id).json()
        stages = [s for s in job.get("stageStates", []) if s.get("executionStageState") == "JOB_STATE_RUNNING"]
        return stages and registry(server, job_id).get(worker_id, {}).get("workItemId")

    wait_for(ready, what=f"job {job_id} running on {worker_id}")


@pytest.fixture
def wordcount(tmp_path):
    """Input for slow_wordcount.py, and the output an undisturbed DirectRunner run writes from it."""
    source = tmp_path / "input.txt"
    source.write_text("\n".join(TEXT.splitlines()[:40]) + "\n")
    run(
        [
            str(PIPELINES / "slow_wordcount.py"),
            str(source),
            str(tmp_path / "expected" / "out"),
            "0",
            "--runner=DirectRunner",
        ]
    )
    return source, read_output(tmp_path / "expected" / "out")


def submit_wordcount(server: Server, project: str, workdir: Path, source: Path, name: str, seconds: float) -> str:
    done = run(
        [
            str(PIPELINES / "slow_wordcount.py"),
            str(source),
            str(workdir / name / "out"),
            str(seconds),
            *dataflow_flags(server, project, workdir, name),
        ]
    )
    return done.stdout.split("JOB_ID ", 1)[1].split()[0]


def test_a_worker_killed_mid_job_is_replaced_and_the_output_is_identical(remote, project, tmp_path, workers, wordcount):
    source, expected = wordcount
    api = Api(remote.url, project)
    first = workers(remote, "first")
    job_id = submit_wordcount(remote, project, tmp_path, source, "killed", 0.15)
    running_on(remote, api, job_id, "first")
    events = worker_detail(remote, "first")["lifecycleEvents"]
    executor = int(next(e for e in events if e["event"] == "CONTAINER_START")["metadata"]["executor_pid"])

    first.signal(signal.SIGKILL)
    # The executor goes with its worker: a lost worker's work never runs on behind the service's back.
    wait_for(lambda: not alive_in_group(executor), timeout=5, what="the executor to die with its worker")
    second = workers(remote, "second")
    done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)

    # Same output as an undisturbed run: nothing lost, nothing twice (the killed attempt never finalized).
    assert read_output(tmp_path / "killed" / "out") == expected
    assert len(list((tmp_path / "killed").glob("out-*-of-00003"))) == 3
    messages = "\n".join(texts(api, job_id))
    assert "Worker first was lost: no health report since" in messages
    assert "Worker second took over work item" in messages and "attempt 2" in messages
    assert "Worker first started" in messages and "Worker second started" in messages

    entries = registry(remote, job_id)
    assert entries["first"]["state"] == "LOST"

    # The second worker obeys the service's 1 s interval (its own default is 5 s): from its report after the
    # service's answer, which a loaded machine can delay.
    def obeyed():
        detail = worker_detail(remote, "second")
        health = detail.get("health", {})
        return detail if health.get("reportInterval") == "1s" and health.get("vmIsHealthy") is True else None

    detail = wait_for(obeyed, timeout=60, what="a health report at the service's 1 s interval")
    samples = detail["cpuTime"]
    assert len(samples) >= 3 and all(int(s["totalMs"]) >= 0 for s in samples)
    events = [e["event"] for e in detail["lifecycleEvents"]]
    for event in (
        "CONTAINER_START",
        "STAGING_FILES_DOWNLOAD_START",
        "STAGING_FILES_DOWNLOAD_FINISH",
        "SDK_INSTALL_START",
        "SDK_INSTALL_FINISH",
    ):
        assert event in events, events
    staged = next(e for e in detail["lifecycleEvents"] if e["event"] == "STAGING_FILES_DOWNLOAD_FINISH")
    assert int(staged["metadata"]["downloaded_bytes"]) > 0
    assert detail["workItemProgress"] == 1.0  # reported as its work went, done at the end
    assert second.process.poll() is None  # it lives on, ready for more work


@pytest.fixture
def patient(tmp_path) -> Server:
    """A server without local workers whose health deadline (3 intervals of 10 s) cannot move work first."""
    srv = Server(
        tmp_path / "patient" / "data",
        extra_args=("--workers", "0", "--worker-report-interval", "10", "--allow-path", str(tmp_path)),
    ).start()
    yield srv
    srv.stop()


def test_sigterm_sends_a_shutdown_notice_and_the_work_moves_at_once(patient, project, tmp_path, workers, wordcount):
    remote = patient
    source, expected = wordcount
    api = Api(remote.url, project)
    leaving = workers(remote, "leaving", "--preemptible")
    job_id = submit_wordcount(remote, project, tmp_path, source, "moved", 0.15)
    running_on(remote, api, job_id, "leaving")
    workers(remote, "staying")

    leaving.signal(signal.SIGTERM)
    # Leased by the other worker on the notice, well before the health deadline (30 s) could move it; and the
    # job's messages say it was not lost (a bound of 2.5 s with a 1 s interval raced a busy machine's speed).
    wait_for(lambda: registry(remote, job_id).get("staying", {}).get("workItemId"), timeout=20, what="the move")
    assert not any("Worker leaving was lost" in t for t in texts(api, job_id)), texts(api, job_id)
    assert leaving.process.wait(timeout=10) == 0
    running_on(remote, api, job_id, "staying")
    entry = registry(remote, job_id)["leaving"]
    assert entry["state"] == "SHUTDOWN" and "PREEMPTION" in entry["reason"]
    notices = [e for e in worker_detail(remote, "leaving")["lifecycleEvents"] if e["event"] == "SHUTDOWN_NOTICE"]
    assert notices and notices[0]["reason"] == "PREEMPTION"
    assert any("Worker leaving is shutting down (PREEMPTION)" in t for t in texts(api, job_id))

    # debug.getWorkerStacktraces, through Google's discovery client: the live executor's thread stacks. A stack is
    # sampled while its thread runs: one caught inside a generator (Beam's text reader) can lack its outer frames
    # (CPython 3.11), so the engine thread's is sampled again until the executor's own frame shows.
    def engine_stack() -> str:
        stacks = (
            discovery_client(remote.url)
            .projects()
            .locations()
            .jobs()
            .debug()
            .getWorkerStacktraces(projectId=project, location="us-central1", jobId=job_id, body={"workerId": "staying"})
            .execute()
        )
        threads = {s["threadName"]: s["stackContent"] for s in stacks["sdks"][0]["stacks"]}
        assert "engine" in threads, threads
        return threads["engine"]

    samples = [engine_stack()]
    while "executor.py" not in samples[-1] and len(samples) < 10:
        time.sleep(0.2)
        samples.append(engine_stack())
    assert "executor.py" in samples[-1], samples

    # The CLI's view of the registry: the staying worker running and healthy (listed again while a report that
    # a loaded machine delayed has it UNHEALTHY for a moment).
    def listed():
        listing = subprocess.run(
            [sys.executable, "-m", "beamport", "workers", "list", "--job", job_id, "--endpoint", remote.url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listing.returncode == 0, listing.stderr
        header, *rows = listing.stdout.splitlines()
        assert header.split() == ["WORKER_ID", "JOB_ID", "STATE", "HEALTH", "CPU", "UPTIME", "WORK_ITEM", "LAST_REPORT"]
        (row,) = [r.split() for r in rows]
        return row if row[0] == "staying" and row[2] == "RUNNING" and row[3] == "healthy" else None

    row = wait_for(listed, timeout=60, what="the staying worker listed RUNNING and healthy")
    assert row[4].endswith("%")

    done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
    assert read_output(tmp_path / "moved" / "out") == expected
    # A shutdown is not the work's fault: no failure counted.
    assert not any("failures allowed" in t for t in texts(api, job_id))


def test_a_second_worker_with_its_own_data_dir_picks_up_queued_jobs(tmp_path, project, workers):
    srv = Server(tmp_path / "data", extra_args=("--workers", "1", "--allow-path", str(tmp_path))).start()
    try:
        api = Api(srv.url, project)
        slow = run(
            [
                str(PIPELINES / "slow_pipeline.py"),
                "30",
                str(tmp_path / "slow" / "out"),
                *dataflow_flags(srv, project, tmp_path, "slow"),
            ]
        )
        slow_id = slow.stdout.split("JOB_ID ", 1)[1].split()[0]
        wait_state(api, slow_id, {"JOB_STATE_RUNNING"})
        quick = run(
            [
                str(PIPELINES / "slow_pipeline.py"),
                "0",
                str(tmp_path / "quick" / "out"),
                *dataflow_flags(srv, project, tmp_path, "quick"),
            ]
        )
        quick_id = quick.stdout.split("JOB_ID ", 1)[1].split()[0]
        wait_state(api, quick_id, {"JOB_STATE_QUEUED"})
        extra = workers(srv, "extra")
        done = wait_state(api, quick_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
        assert done["currentState"] == "JOB_STATE_DONE", texts(api, quick_id)
        assert read_output(tmp_path / "quick" / "out") == ["1"]
        assert "extra" in registry(srv, quick_id)
        assert extra.data_dir.is_dir() and (extra.data_dir.parent / "extra.log").exists()
        assert api.get(slow_id).json()["currentState"] == "JOB_STATE_RUNNING"  # still on the local worker
        api.update(slow_id, {"requestedState": "JOB_STATE_CANCELLED"})
    finally:
        srv.stop()


def test_a_job_scales_between_num_workers_and_max_workers_from_its_backlog(remote, project, tmp_path, workers):
    api = Api(remote.url, project)
    workers(remote, "scaler")
    done = run(
        [
            str(PIPELINES / "scaling_pipeline.py"),
            str(tmp_path / "scaled" / "out"),
            *dataflow_flags(remote, project, tmp_path, "scaled"),
            "--num_workers=1",
            "--max_num_workers=2",
            "--autoscaling_algorithm=THROUGHPUT_BASED",
        ]
    )
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    final = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
    assert final["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
    assert read_output(tmp_path / "scaled" / "out") == [f"{k}: 2500" for k in range(8)]

    # messages.list's autoscalingEvents, through Google's discovery client.
    listing = (
        discovery_client(remote.url)
        .projects()
        .locations()
        .jobs()
        .messages()
        .list(projectId=project, location="us-central1", jobId=job_id)
        .execute()
    )
    events = [(e["eventType"], e["currentNumWorkers"], e["targetNumWorkers"]) for e in listing["autoscalingEvents"]]
    assert events[0] == ("TARGET_NUM_WORKERS_CHANGED", "0", "1"), events  # numWorkers at the start
    assert ("TARGET_NUM_WORKERS_CHANGED", "1", "2") in events, events  # the shuffle's backlog raised it
    scaled_up = ("CURRENT_NUM_WORKERS_CHANGED", "2", "2") in events
    assert scaled_up or (os.cpu_count() == 1 and any(e[0] == "ACTUATION_FAILURE" for e in events)), events
    assert any(e[0] == "TARGET_NUM_WORKERS_CHANGED" and e[2] == "1" for e in events[2:]), events  # and lowered after
    assert all(int(e[2]) <= 2 for e in events)  # never past maxNumWorkers
    raised = next(e for e in listing["autoscalingEvents"] if e["targetNumWorkers"] == "2")
    assert "backlog" in raised["description"]["messageText"]


def test_a_remote_worker_keeps_its_work_across_a_server_restart(tmp_path, project, workers, wordcount):
    source, expected = wordcount
    srv = Server(
        tmp_path / "data", extra_args=("--workers", "0", "--worker-report-interval", "1", "--allow-path", str(tmp_path))
    ).start()
    try:
        api = Api(srv.url, project)
        workers(srv, "steady")
        job_id = submit_wordcount(srv, project, tmp_path, source, "restarted", 0.1)
        running_on(srv, api, job_id, "steady")
        srv.stop(signal.SIGKILL)
        time.sleep(4)  # longer than 3 health intervals: the worker's reports fail meanwhile
        srv.start()
        done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
        assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
        assert read_output(tmp_path / "restarted" / "out") == expected
        # The same attempt finished: nothing was lost or moved.
        messages = "\n".join(texts(api, job_id))
        assert "took over" not in messages and "was lost" not in messages, messages
    finally:
        srv.stop()


def test_a_worker_idle_past_its_health_deadline_is_not_lost_when_it_leases_again(remote, project):
    """Played by hand over HTTP, so that no health report comes between the lease and the sweeps."""
    api = Api(remote.url, project)
    first, second = api.create("idle-first"), api.create("idle-second")
    jobs = f"/v1b3/projects/{project}/locations/us-central1/jobs"

    def lease(job):
        body = {"workerId": "idler", "requestedLeaseDuration": "60s"}
        return api.client.post(f"{jobs}/{job['id']}/workItems:lease", json=body).json()["workItems"][0]

    item = lease(first)
    health = {"labels": {"JOB_ID": first["id"], "WORKER_ID": "idler"}, "workerHealthReport": {"vmIsHealthy": True}}
    assert (
        api.client.post(
            f"/v1b3/projects/{project}/locations/us-central1/WorkerMessages", json={"workerMessages": [health]}
        ).status_code
        == 200
    )
    done = {
        "workerId": "idler",
        "workItemStatuses": [{"workItemId": item["id"], "reportIndex": "1", "completed": True}],
    }
    assert api.client.post(f"{jobs}/{first['id']}/workItems:reportStatus", json=done).status_code == 200
    # Idle for longer than 3 intervals of 1 s, and past the 15 s after the server's start (no deadline then).
    time.sleep(max(3.5, remote.started + 16 - time.monotonic()))
    item = lease(second)
    time.sleep(2.5)  # sweeps run; the worker has sent no health report since its lease
    assert registry(remote, second["id"])["idler"]["state"] == "RUNNING"
    status = {"workerId": "idler", "workItemStatuses": [{"workItemId": item["id"], "reportIndex": "1"}]}
    answer = api.client.post(f"{jobs}/{second['id']}/workItems:reportStatus", json=status).json()
    assert "completeWorkStatus" not in answer["workItemServiceStates"][0], answer


def test_idle_workers_are_listed_live_their_polls_noted_sparingly_and_lost_once_they_stop(tmp_path, project, workers):
    """Workers that wait for work send no health reports: their lease polls keep them live (IDLE); a worker
    that stops polling is LOST after its deadline and leaves the default listing, though it held no work.
    A server of its own: no other test's work for the worker that takes any project's."""
    remote = Server(
        tmp_path / "data", extra_args=("--workers", "0", "--worker-report-interval", "1", "--allow-path", str(tmp_path))
    ).start()
    try:
        _idle_workers(remote, project, workers)
    finally:
        remote.stop()


def _idle_workers(remote: Server, project: str, workers) -> None:
    api = Api(remote.url, project)
    idle_job = api.create("nothing-to-do")  # cancelled before any worker leased it: it has no work, ever
    assert api.update(idle_job["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    waiting = workers(remote, "waiting")  # any project's work: the service holds its polls up to 2 s
    # Polls for one job's work: answered at once, 10 a second (--poll-interval 0.1).
    workers(remote, "bound", "--project", project, "--region", "us-central1", "--job-id", idle_job["id"])
    workers(remote, "elsewhere", "--project", f"{project}-other")
    ours = {"waiting", "bound", "elsewhere"}
    live = wait_for(
        lambda: (found := registry(remote, include_gone=False)) and ours <= set(found) and found,
        timeout=60,
        what="the three idle workers listed live",
    )
    assert {worker_id: live[worker_id]["state"] for worker_id in ours} == dict.fromkeys(ours, "IDLE")
    assert "health" not in live["waiting"] and live["bound"]["projectId"] == project

    # `beamport workers list` shows them without --all; with --project, that project's and the unbound ones.
    rows = listed(remote)
    assert ours <= set(rows) and {rows[w][2] for w in ours} == {"IDLE"}, rows
    assert rows["waiting"][1:4] == ["-", "IDLE", "-"]  # no job yet, no health report
    in_project = listed(remote, "--project", project)
    assert {"waiting", "bound"} <= set(in_project) and "elsewhere" not in in_project
    in_europe = listed(remote, "--project", project, "--region", "europe-west1")
    assert "waiting" in in_europe and "bound" not in in_europe

    # Ten polls a second, noted at most once per idle interval (2.5 s here: the 1 s health interval is shorter).
    seen, deadline = set(), time.monotonic() + 6
    while time.monotonic() < deadline:
        seen.add(registry(remote, include_gone=False)["bound"]["lastSeenTime"])
        time.sleep(0.1)
    times = sorted(datetime.fromisoformat(t).timestamp() for t in seen)
    assert len(times) >= 2 and all(b - a >= 2.5 for a, b in itertools.pairwise(times)), sorted(seen)

    waiting.signal(signal.SIGKILL)
    gone = wait_for(
        lambda: registry(remote).get("waiting", {}).get("state") == "LOST" and registry(remote)["waiting"],
        timeout=60,
        what="the killed idle worker LOST",
    )
    assert gone["reason"].startswith("no report or lease poll since"), gone
    assert "waiting" not in registry(remote, include_gone=False) and "waiting" not in listed(remote)
    assert listed(remote, "--all")["waiting"][1:4] == ["-", "LOST", "-"]
    assert registry(remote, include_gone=False)["bound"]["state"] == "IDLE"  # still polling


def test_a_worker_that_stops_reporting_is_lost_even_when_it_held_no_work(remote, project):
    """Played over the WorkerMessages API: one healthy report, no work, then silence."""
    api = Api(remote.url, project)
    job = api.create("reported-once")
    worker_id = f"quiet-{project}"
    health = {"labels": {"JOB_ID": job["id"], "WORKER_ID": worker_id}, "workerHealthReport": {"vmIsHealthy": True}}
    answer = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/WorkerMessages", json={"workerMessages": [health]}
    )
    assert answer.json()["workerMessageResponses"][0]["workerHealthReportResponse"]["reportInterval"] == "1s"
    assert listed(remote, "--project", project)[worker_id][2:4] == ["RUNNING", "healthy"]

    entry = wait_for(
        lambda: registry(remote).get(worker_id, {}).get("state") == "LOST" and registry(remote)[worker_id],
        timeout=60,
        what="the silent worker LOST",
    )
    assert entry["reason"] == f"no report or lease poll since {entry['lastHealthTime']}", entry
    assert entry["health"]["vmIsHealthy"] is True  # its last report, as it sent it: history ...
    assert listed(remote, "--all", "--project", project)[worker_id][2:4] == ["LOST", "-"]  # ... not its health now
    assert worker_id not in listed(remote, "--project", project)
    # It held no work: nothing of its job's is released, and the job is not told.
    assert not any("was lost" in text for text in texts(Api(remote.url, project), job["id"]))


def test_the_local_workers_are_listed_idle_and_shown_gone_once_their_server_stops(tmp_path):
    """The newcomer's case: `beamport serve`, then `beamport workers list` (and after a restart, no ghosts)."""
    srv = Server(tmp_path / "data", extra_args=("--workers", "2", "--allow-path", str(tmp_path))).start()
    try:
        first = wait_for(lambda: len(rows := listed(srv)) == 2 and rows, timeout=60, what="two local workers listed")
        assert all(worker_id.startswith("local-") and row[2] == "IDLE" for worker_id, row in first.items()), first
        srv.stop()
        srv.start()
        second = wait_for(
            lambda: len(rows := listed(srv)) == 2 and not set(rows) & set(first) and rows,
            timeout=60,
            what="the new server's two local workers listed, and only them",
        )
        assert {row[2] for row in second.values()} == {"IDLE"}
        everyone = registry(srv)
        for worker_id in first:  # the pool stopped them: gone at once, not after their deadline
            assert everyone[worker_id]["state"] == "SHUTDOWN", everyone[worker_id]
            assert everyone[worker_id]["reason"] == "the Beamport server stopped its local workers."
    finally:
        srv.stop()
