"""Jobs submitted with Beam's DataflowRunner run for real: outputs, states, messages, metrics, cancel, restart."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import Api, Server, new_postgres_database

PIPELINES = Path(__file__).parent / "pipelines"
pytestmark = pytest.mark.slow

TEXT = "\n".join(
    f"line {i}: the quick brown fox jumps over the lazy dog, a tale of {i % 7} cats and {i % 3} mice."
    for i in range(300)
)


def dataflow_flags(server: Server, project: str, workdir: Path, name: str) -> list[str]:
    # Beam stages locally and uses REST only when the endpoint's host is "localhost".
    return [
        "--runner=DataflowRunner",
        f"--dataflow_endpoint={server.url.replace('127.0.0.1', 'localhost')}",
        "--no_auth",
        f"--project={project}",
        "--region=us-central1",
        f"--temp_location={workdir}",
        f"--staging_location={workdir}",
        f"--job_name={name}",
    ]


def run(args: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def read_output(prefix: Path) -> list[str]:
    return sorted(line for f in prefix.parent.glob(prefix.name + "*") for line in f.read_text().splitlines())


def wait_state(api: Api, job_id: str, states: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(job_id).json()
        if job.get("currentState") in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job_story(api, job_id)}")


def job_story(api: Api, job_id: str) -> str:
    """The job as the server has it now, and its newest messages: what it was doing (an engine's warnings, a
    worker lost, a resubmission), for a test's failure to say."""
    found, token = [], None
    for _ in range(50):
        params = {"minimumImportance": "JOB_MESSAGE_DETAILED", **({"pageToken": token} if token else {})}
        page = api.messages(job_id, **params).json()
        found += page.get("jobMessages", [])
        if not (token := page.get("nextPageToken")):
            break
    said = "\n".join(f"  {m.get('time')} {_ends(m.get('messageText', ''))}" for m in found[-30:])
    return f"{api.get(job_id).json()}\nits messages:\n{said}"


def _ends(text: str) -> str:
    """A long message's start and end: a failure's traceback says where it was raised at its end."""
    return text if len(text) <= 1500 else f"{text[:300]} [...] {text[-1200:]}"


def texts(api: Api, job_id: str) -> list[str]:
    return [
        m["messageText"]
        for m in api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000)
        .json()
        .get("jobMessages", [])
    ]


def job_ids(api: Api) -> list[str]:
    return [j["id"] for j in api.all_jobs()]


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Server:
    """A server that runs jobs, allowed to use the tests' temporary directories."""
    base = tmp_path_factory.mktemp("runner")
    srv = Server(base / "data", extra_args=("--allow-path", str(base.parent))).start()
    yield srv
    srv.stop()


@pytest.fixture
def workdir(runner, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("work")
    (path / "in.txt").write_text(TEXT)
    return path


@pytest.mark.parametrize(
    "module,extra",
    [
        ("apache_beam.examples.wordcount", []),
        ("apache_beam.examples.wordcount_minimal", []),
        ("apache_beam.examples.cookbook.multiple_output_pardo", []),
        ("apache_beam.examples.complete.autocomplete", []),
    ],
)
def test_beam_examples_match_direct_runner(runner, project, workdir, module, extra):
    api = Api(runner.url, project)
    direct = workdir / "direct" / "out"
    run(["-m", module, "--input", str(workdir / "in.txt"), "--output", str(direct), "--runner=DirectRunner", *extra])
    served = workdir / "served" / "out"
    flags = dataflow_flags(runner, project, workdir, "example")
    run(["-m", module, "--input", str(workdir / "in.txt"), "--output", str(served), *flags, *extra])

    assert read_output(served) == read_output(direct) != []
    (job,) = api.all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    full = api.get(job["id"], view="JOB_VIEW_ALL").json()
    assert full["steps"] and full["pipelineDescription"]["originalPipelineTransform"]
    assert full["stageStates"] and {s["executionStageState"] for s in full["stageStates"]} == {"JOB_STATE_DONE"}
    # The graph described at submission names the stages the engine then ran.
    planned = {stage["name"] for stage in full["pipelineDescription"]["executionPipelineStage"]}
    assert {s["executionStageName"] for s in full["stageStates"]} <= planned
    assert "Workers have started successfully." in texts(api, job["id"])


def test_user_pipeline_outputs_and_metrics_match_direct_runner(runner, project, workdir):
    api = Api(runner.url, project)
    script = str(PIPELINES / "rich_pipeline.py")
    direct = run(
        [
            script,
            "--input",
            str(workdir / "in.txt"),
            "--output",
            str(workdir / "direct" / "out"),
            "--runner=DirectRunner",
        ]
    )
    served = run(
        [
            script,
            "--input",
            str(workdir / "in.txt"),
            "--output",
            str(workdir / "served" / "out"),
            *dataflow_flags(runner, project, workdir, "rich"),
        ]
    )

    assert read_output(workdir / "served" / "out") == read_output(workdir / "direct" / "out") != []
    metrics = lambda done: json.loads(done.stdout.split("METRICS ", 1)[1].splitlines()[0])  # noqa: E731
    assert metrics(served) == metrics(direct)
    assert metrics(served)["counters"][0][2] > 0

    (job,) = api.all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    # The SDK, from the user agent Beam sent (jobs.list's summary view has it, as Dataflow's does).
    beam = importlib.metadata.version("apache-beam")
    assert job["jobMetadata"]["sdkVersion"] == {
        "version": beam,
        "versionDisplayName": "Apache Beam SDK for Python",
        "sdkSupportStatus": "SUPPORTED",
    }
    all_texts = texts(api, job["id"])
    assert any("a window of" in t for t in all_texts)  # the pipeline's own log records
    warnings = api.messages(job["id"], minimumImportance="JOB_MESSAGE_WARNING").json()["jobMessages"]
    assert any("a window of" in m["messageText"] for m in warnings)
    # System metrics: elements per PCollection, named as Dataflow names them.
    metrics_now = api.client.get(f"{api.jobs_path}/{job['id']}/metrics").json()["metrics"]
    counts = {
        m["name"]["context"]["output_user_name"]: m["scalar"]
        for m in metrics_now
        if m["name"]["name"] == "ElementCount" and "tentative" not in m["name"]["context"]
    }
    words_counted = metrics(served)["counters"][0][2]  # the pipeline's own counter of the words it emitted
    assert counts["Count/Count:PairWithVoid-out0"] == words_counted == 4500
    # What the run used, as Dataflow reports it (its worker's last sample follows the end of the work).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics_now = api.client.get(f"{api.jobs_path}/{job['id']}/metrics").json()["metrics"]
        used = {
            m["name"]["name"]: m["scalar"]
            for m in metrics_now
            if m["name"]["origin"] == "dataflow/v1b3" and "context" not in m["name"]
        }
        if used.get("TotalVcpuTime", 0) > 0 and used.get("TotalMemoryUsage", 0) > 0:
            break
        time.sleep(0.1)
    assert used.get("TotalVcpuTime", 0) > 0 and used.get("TotalMemoryUsage", 0) > 0, used
    details = api.client.get(f"{api.jobs_path}/{job['id']}/executionDetails").json()
    assert details["stages"] and all(s["state"] == "EXECUTION_STATE_SUCCEEDED" for s in details["stages"])
    stage = details["stages"][0]
    assert stage["startTime"] <= stage["endTime"] and stage["progress"]["currentProgress"] == 1.0
    # Both answers parse as the GAPIC types (as google-cloud-dataflow-client would read them).
    from google.cloud import dataflow_v1beta3 as dataflow
    from google.protobuf import json_format

    json_format.ParseDict(details, dataflow.JobExecutionDetails.pb()())
    one = api.client.get(f"{api.jobs_path}/{job['id']}/stages/{stage['stageId']}/executionDetails")
    json_format.ParseDict(one.json(), dataflow.StageExecutionDetails.pb()())
    assert one.json()["workers"][0]["workItems"][0]["state"] == "EXECUTION_STATE_SUCCEEDED"


def test_failing_pipeline_ends_failed_with_the_traceback(runner, project, workdir):
    api = Api(runner.url, project)
    done = run(
        [str(PIPELINES / "failing_pipeline.py"), *dataflow_flags(runner, project, workdir, "failing")], check=False
    )
    assert done.returncode != 0
    assert "boom on element 3" in done.stderr  # wait_until_finish raises with the job's error
    (job,) = api.all_jobs()
    assert job["currentState"] == "JOB_STATE_FAILED"
    errors = [
        m["messageText"] for m in api.messages(job["id"], minimumImportance="JOB_MESSAGE_ERROR").json()["jobMessages"]
    ]
    assert any("Traceback" in e and "explode" in e and "ValueError: boom on element 3" in e for e in errors), errors


def worker_groups(server: Server, api: Api, job_id: str) -> tuple[int, int]:
    """The process groups of the job's worker and of the executor running its work (each leads its own),
    from the worker registry: the worker's CONTAINER_ID label and its CONTAINER_START event."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for worker in api.client.get(f"{server.url}/beamport/v1/workers", params={"jobId": job_id}).json()["workers"]:
            events = api.client.get(f"{server.url}/beamport/v1/workers/{worker['workerId']}").json()["lifecycleEvents"]
            starts = [e for e in events if e["event"] == "CONTAINER_START" and e["jobId"] == job_id]
            if starts:
                return int(worker["labels"]["CONTAINER_ID"]), int(starts[-1]["metadata"]["executor_pid"])
        time.sleep(0.05)
    raise AssertionError(f"no worker started for job {job_id}")


def alive_in_group(group: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if proc.name.isdigit() and int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(proc.name))
    return alive


def submit_slow(server, project, workdir, name, seconds) -> str:
    done = run(
        [
            str(PIPELINES / "slow_pipeline.py"),
            str(seconds),
            str(workdir / name / "out"),
            *dataflow_flags(server, project, workdir, name),
        ]
    )
    return done.stdout.split("JOB_ID ", 1)[1].split()[0]


def test_cancel_stops_the_run_within_two_seconds(runner, project, workdir):
    api = Api(runner.url, project)
    job_id = submit_slow(runner, project, workdir, "slow", 120)
    wait_state(api, job_id, {"JOB_STATE_RUNNING"})
    wait = time.monotonic()
    while not any(
        s.get("executionStageState") == "JOB_STATE_RUNNING" for s in api.get(job_id).json().get("stageStates", [])
    ):
        assert time.monotonic() - wait < 60, "no stage ever started"
        time.sleep(0.1)
    _worker, group = worker_groups(runner, api, job_id)
    assert alive_in_group(group)

    started = time.monotonic()
    assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=2)
    # The worker's executor learns it from its next report's answer, and stops with its SDK workers.
    while alive_in_group(group) and time.monotonic() - started < 2:
        time.sleep(0.02)
    assert time.monotonic() - started < 2
    assert alive_in_group(group) == []
    assert not list((workdir / "slow").glob("out*"))


def test_jobs_past_the_limit_queue(tmp_path, project):
    srv = Server(tmp_path / "data", extra_args=("--allow-path", str(tmp_path), "--workers", "1")).start()
    try:
        api = Api(srv.url, project)
        release = tmp_path / "release"  # the first job runs until the test has seen the second one queue
        first = submit_slow(srv, project, tmp_path, "first", release)
        wait_state(api, first, {"JOB_STATE_RUNNING"})
        second = submit_slow(srv, project, tmp_path, "second", 0)
        queued = wait_state(api, second, {"JOB_STATE_QUEUED"})
        assert queued["currentState"] == "JOB_STATE_QUEUED"
        assert any("queued" in t for t in texts(api, second))
        release.touch()
        wait_state(api, first, {"JOB_STATE_DONE"}, timeout=120)
        wait_state(api, second, {"JOB_STATE_DONE"}, timeout=120)
        assert read_output(tmp_path / "second" / "out") == ["1"]
    finally:
        srv.stop()


def test_a_queued_job_runs_its_own_pipeline_after_a_later_submission_replaced_the_staged_file(tmp_path, project):
    # DataflowRunner writes every submission's pipeline.pb at the same path of a local staging location.
    srv = Server(tmp_path / "data", extra_args=("--allow-path", str(tmp_path), "--workers", "1")).start()
    try:
        api = Api(srv.url, project)
        release = tmp_path / "release"
        first = submit_slow(srv, project, tmp_path, "first", release)
        wait_state(api, first, {"JOB_STATE_RUNNING"})
        second = submit_slow(srv, project, tmp_path, "second", 0)
        wait_state(api, second, {"JOB_STATE_QUEUED"})
        third = submit_slow(srv, project, tmp_path, "third", 0)  # replaces pipeline.pb while second waits
        release.touch()
        for job_id in (first, second, third):
            done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
            assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
        assert read_output(tmp_path / "second" / "out") == ["1"]
        assert read_output(tmp_path / "third" / "out") == ["1"]
        # The job as the service kept it, and what a create with a pipeline that is not the one it names gets.
        kept = httpx.get(f"{srv.url}/beamport/v1/projects/{project}/locations/us-central1/jobs/{second}/pipeline")
        assert kept.status_code == 200 and kept.headers["content-type"] == "application/x-protobuf"
        body = api.get(second, view="JOB_VIEW_ALL").json()
        body["environment"]["sdkPipelineOptions"]["options"]["pipelineProtoHash"] = "0" * 64
        created = api.client.post(api.jobs_path, json={"name": "mismatched", "environment": body["environment"]})
        assert created.status_code == 400, created.text
        assert "not the one this job was submitted with" in created.json()["error"]["message"]
    finally:
        srv.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_restart_during_a_run_runs_the_work_again(tmp_path, project, backend):
    url = new_postgres_database() if backend == "postgres" else None
    srv = Server(tmp_path / "data", database_url=url, extra_args=("--allow-path", str(tmp_path))).start()
    try:
        api = Api(srv.url, project)
        release = tmp_path / "release"  # the first attempt runs until the server is killed, however slow the machine
        job_id = submit_slow(srv, project, tmp_path, "resumed", release)
        wait_state(api, job_id, {"JOB_STATE_RUNNING"})
        first_worker, first_executor = worker_groups(srv, api, job_id)
        srv.stop(signal.SIGKILL)
        release.touch()
        srv.start()
        done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
        assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
        assert any("restarted" in t and "attempt 2" in t for t in texts(api, job_id))
        assert read_output(tmp_path / "resumed" / "out") == ["1"]
        # The first server's worker did not outlive the restart (the new server killed it).
        assert alive_in_group(first_worker) == [] and alive_in_group(first_executor) == []
    finally:
        srv.stop()


def test_files_outside_the_allowed_roots_are_refused(tmp_path, project):
    # The server's roots: its data dir, the directory it starts in (tmp_path/srv) and tmp_path/allowed.
    srv = Server(tmp_path / "srv" / "data", extra_args=("--allow-path", str(tmp_path / "allowed"))).start()
    try:
        api = Api(srv.url, project)
        outside = tmp_path / "outside"
        outside.mkdir()
        done = run(
            [
                str(PIPELINES / "slow_pipeline.py"),
                "0",
                str(outside / "out"),
                *dataflow_flags(srv, project, outside, "refused"),
            ],
            check=False,
        )
        assert done.returncode != 0
        assert "403" in done.stderr and str(outside) in done.stderr and "outside the allowed roots" in done.stderr
        assert job_ids(api) == []
        # Through a symlink inside an allowed root: still refused.
        (tmp_path / "allowed").mkdir()
        os.symlink(outside, tmp_path / "allowed" / "link")
        response = api.client.post(
            api.jobs_path,
            json={
                "name": "sneaky",
                "environment": {
                    "sdkPipelineOptions": {
                        "options": {"pipelineUrl": str(tmp_path / "allowed" / "link" / "pipeline.pb")}
                    }
                },
            },
        )
        assert response.status_code == 403 and response.json()["error"]["status"] == "PERMISSION_DENIED"
        assert job_ids(api) == []
    finally:
        srv.stop()
