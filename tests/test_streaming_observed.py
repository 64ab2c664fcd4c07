"""Streaming jobs on Flink and Prism, seen as batch jobs are (issue 19): their user metrics in getMetrics and
DataflowRunner's `result.metrics().query()` while they run and after drain, their SDK workers' logs in the
job's messages, and their staged packages (an --extra_package wheel, a --setup_file package) and main session
on every SDK worker.

Same clusters and markers as tests/test_streaming.py: Flink from BEAMPORT_TEST_FLINK_ENV, Prism from
BEAMPORT_TEST_PRISM.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Api, Server, required_path
from test_console import browser  # noqa: F401  (the Chromium that test_console drives)
from test_running_jobs import dataflow_flags, wait_state
from test_streaming import DRAIN_S, START_S, append, cancel_live_flink_jobs_of, flink_args, flink_endpoints, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flink")]

PIPELINE = Path(__file__).parent / "pipelines" / "streaming_observed.py"
# staged_probe (a wheel) calls setup_probe (a package of --setup_file's): each must reach the SDK worker.
PROBE = "import setup_probe\n\n\nclass Mark:\n    pass\n\n\ndef describe(line):\n    return setup_probe.PREFIX + line\n"
SETUP = "import setuptools\nsetuptools.setup(name='setup-probe', version='1.0', packages=['setup_probe'])\n"


def probe_wheel(root: Path) -> tuple[Path, Path]:
    """Modules Beamport's Python does not have: their source (for the submitter, with the setup.py of one, for
    --setup_file) and a wheel of the other (staged with --extra_package)."""
    source = root / "probe-src"
    (source / "setup_probe").mkdir(parents=True)
    (source / "setup_probe" / "__init__.py").write_text('PREFIX = "probe:"\n')
    (source / "setup.py").write_text(SETUP)
    (source / "staged_probe.py").write_text(PROBE)
    wheel = root / "staged_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("staged_probe.py", PROBE)
        archive.writestr(
            "staged_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: staged-probe\nVersion: 1.0\n"
        )
    return source, wheel


def user_metrics(api: Api, job_id: str) -> dict:
    """getMetrics' user metrics as {(name, tentative): value} (a distribution's value its dict)."""
    found = {}
    for metric in api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", []):
        name = metric["name"]
        if name.get("origin") == "user":
            tentative = (name.get("context") or {}).get("tentative") == "true"
            found[name["name"], tentative] = metric.get("scalar", metric.get("distribution", metric.get("gauge")))
    return found


def element_counts(api: Api, job_id: str) -> dict[str, int]:
    """getMetrics' committed ElementCount per PCollection, by its output_user_name."""
    return {
        m["name"]["context"]["output_user_name"]: m["scalar"]
        for m in api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
        if m["name"]["name"] == "ElementCount" and "tentative" not in m["name"]["context"]
    }


def source_backlog(api: Api, job_id: str) -> dict[tuple[str, str], float]:
    """getMetrics' committed backlog figures, by (the name of the source's step, BacklogBytes/BacklogElements)."""
    described = api.get(job_id, view="JOB_VIEW_ALL").json().get("pipelineDescription", {})
    names = {t["id"]: t["name"] for t in described.get("originalPipelineTransform", [])}
    return {
        (names.get(m["name"]["context"]["step"], m["name"]["context"]["step"]), m["name"]["name"]): m["scalar"]
        for m in api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
        if m["name"]["name"] in ("BacklogBytes", "BacklogElements") and "tentative" not in m["name"]["context"]
    }


def observed_messages(api: Api, job_id: str) -> list[dict]:
    messages = api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000).json()
    return [m for m in messages.get("jobMessages", []) if m["messageText"].startswith("observed ")]


def submit_observed(srv: Server, project: str, tmp_path: Path, log: Path, out: Path, *extra: str) -> subprocess.Popen:
    """Submit streaming_observed.py with DataflowRunner (its output in tmp_path/submitter.out and .err), the
    probe modules importable here and staged as a wheel and with --setup_file, the main session saved."""
    source, wheel = probe_wheel(tmp_path)
    (tmp_path / "work").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    with open(tmp_path / "submitter.out", "w") as said, open(tmp_path / "submitter.err", "w") as errors:
        return subprocess.Popen(
            [
                sys.executable,
                str(PIPELINE),
                str(log),
                str(out),
                *extra,
                *dataflow_flags(srv, project, tmp_path / "work", "observed"),
                "--streaming",
                "--extra_package",
                str(wheel),
                "--setup_file",
                str(source / "setup.py"),
                "--save_main_session",
                "--labels",
                f"beamport_engine={srv.engine}",
            ],
            stdout=said,
            stderr=errors,
            env=env,
        )


def submitted_job(submitter: subprocess.Popen, tmp_path: Path) -> str:
    said = tmp_path / "submitter.out"
    wait_for("the job submitted", lambda: submitter.poll() is not None or "\n" in said.read_text(), timeout=180)
    assert "JOB_ID " in said.read_text(), (tmp_path / "submitter.err").read_text()[-3000:]
    return said.read_text().split("JOB_ID ", 1)[1].split()[0]


def server_of_its_own(tmp_path: Path, engine: str) -> Server:
    """A server with one worker whose streaming engine is `engine` ("prism", with no Flink; "flink", the suite's
    cluster), started."""
    if engine == "prism":
        engine_args: tuple[str, ...] = ("--prism", str(required_path("BEAMPORT_TEST_PRISM", "builds Prism")))
    else:
        engine_args = flink_args(flink_endpoints())
    srv = Server(tmp_path / "data", extra_args=("--allow-path", str(tmp_path), "--workers", "1", *engine_args))
    srv.start()
    srv.engine = engine
    return srv


@pytest.fixture(params=["prism", "flink"])
def engine_server(request, tmp_path):
    srv = server_of_its_own(tmp_path, request.param)
    yield srv
    srv.stop()


def test_a_streaming_job_reports_its_metrics_logs_and_runs_its_staged_module(engine_server, tmp_path, project):
    srv, api = engine_server, Api(engine_server.url, project)
    log, out, final = tmp_path / "in.log", tmp_path / "out.txt", tmp_path / "metrics.json"
    append(log, ["k0,5", "k1,2", "k0,7"])
    submitter = submit_observed(srv, project, tmp_path, log, out, "--metrics-until", "5", str(final))
    job_id = None
    try:
        job_id = submitted_job(submitter, tmp_path)
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=240)
        written = lambda: out.read_text() if out.exists() else ""  # noqa: E731
        lines = wait_for("three lines written", lambda: len(written().splitlines()) >= 3 and written())
        # The staged module ran on the SDK worker, and the main session was loaded there.
        assert sorted(lines.splitlines()) == [f"probe:{x}|main session loaded" for x in ("k0,5", "k0,7", "k1,2")]

        # Its log lines in its messages, as WARNINGs.
        wait_for("three lines logged", lambda: len(observed_messages(api, job_id)) >= 3, timeout=START_S)
        assert {m["messageImportance"] for m in observed_messages(api, job_id)} == {"JOB_MESSAGE_WARNING"}
        # While it runs: the counter, the distribution and the gauge in getMetrics (Flink: from Flink's operator
        # metrics, up to its metrics.fetcher.update-interval late; docs/engines.md).
        counted = lambda: user_metrics(api, job_id).get(("lines", False)) == 3  # noqa: E731
        wait_for("three lines counted", counted, timeout=START_S)
        running = user_metrics(api, job_id)
        assert running["lines", True] == 3
        assert {k: running["values", False][k] for k in ("sum", "count", "min", "max")} == {
            "sum": 14,
            "count": 3,
            "min": 2,
            "max": 7,
        }
        assert running["last", False]["value"] == 7
        assert api.get(job_id).json()["currentState"] == "JOB_STATE_RUNNING"  # live figures, not final ones

        # The source's backlog: what the log holds past the position read. A line still being written is
        # there (its bytes), not yet an element.
        assert source_backlog(api, job_id) == {("Read/Read", "BacklogBytes"): 0, ("Read/Read", "BacklogElements"): 0}
        with open(log, "a") as partly:
            partly.write("k1,")
        unread = {("Read/Read", "BacklogBytes"): 3, ("Read/Read", "BacklogElements"): 0}
        backlog_seen = lambda: source_backlog(api, job_id) == unread  # noqa: E731
        wait_for("the line being written in the backlog", backlog_seen, timeout=START_S)
        append(log, ["1", "k0,9"])  # the line ends, and another comes
        wait_for("five lines written", lambda: len(written().splitlines()) >= 5)
        # DataflowRunner's result.metrics().query() in the submitting process sees the new input counted, and
        # getMetrics the new figures, before the job is drained.
        submitter.wait(timeout=180)
        assert submitter.returncode == 0, (tmp_path / "submitter.err").read_text()[-3000:]
        wait_for("five lines counted", lambda: user_metrics(api, job_id).get(("lines", False)) == 5, timeout=60)
        running = user_metrics(api, job_id)
        assert running["values", False]["sum"] == 24 and running["values", False]["max"] == 9
        assert running["last", False]["value"] == 9
        assert api.get(job_id).json()["currentState"] == "JOB_STATE_RUNNING"
        assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
        wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=DRAIN_S)
        seen = json.loads(final.read_text())
        assert seen["Observe:lines"] == {"attempted": 5, "committed": 5}
        assert seen["Observe:values"]["attempted"] == [24, 5, 1, 9]  # sum, count, min, max
        final_metrics = user_metrics(api, job_id)
        assert final_metrics["lines", False] == final_metrics["lines", True] == 5
        # The element counts per PCollection (Flink's runner hands them over with its metrics, Prism's with its).
        assert element_counts(api, job_id).get("Observe-out0") == 5
        assert source_backlog(api, job_id) == {("Read/Read", "BacklogBytes"): 0, ("Read/Read", "BacklogElements"): 0}
        # (DataflowMetrics reads no gauges, apache/beam#31788: getMetrics has it.)
        assert final_metrics["last", False]["value"] == final_metrics["last", True]["value"] == 9
        assert {m["messageText"] for m in observed_messages(api, job_id)} == {
            f"observed {x}" for x in ("k0,5", "k1,2", "k0,7", "k1,1", "k0,9")
        }
    finally:
        if submitter.poll() is None:
            submitter.kill()
        if srv.engine == "flink":
            cancel_live_flink_jobs_of(flink_endpoints(), job_id)


def test_a_worker_that_adopts_a_flink_job_gets_its_sdk_workers_logs(tmp_path, project):
    """The job's SDK workers outlive a crashed Beamport and reconnect to the job's log socket, which the worker
    that adopts the job serves again (docs/engines.md)."""
    from test_streaming import crash

    flink = flink_endpoints()
    srv = server_of_its_own(tmp_path, "flink")
    api = Api(srv.url, project)
    log, out = tmp_path / "in.log", tmp_path / "out.txt"
    append(log, ["k0,1"])
    submitter = submit_observed(srv, project, tmp_path, log, out)
    job_id = None
    try:
        job_id = submitted_job(submitter, tmp_path)
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=240)
        wait_for("the first line logged", lambda: observed_messages(api, job_id), timeout=START_S)
        took_over = lambda: sum(  # noqa: E731
            "took over work item" in m["messageText"] for m in api.messages(job_id).json().get("jobMessages", [])
        )
        before = took_over()
        crash(srv)
        srv.start()
        wait_for("the work leased again", lambda: took_over() > before, timeout=90)
        # Records a worker logs while its log stream is down are dropped by Beam's handler, and its reconnection
        # backs off: lines are appended until one read after the takeover is logged.
        appended: list[str] = []
        last_append = [0.0]

        def a_new_line_logged() -> bool:
            logged = {m["messageText"] for m in observed_messages(api, job_id)}
            if any(f"observed {line}" in logged for line in appended):
                return True
            if time.monotonic() - last_append[0] >= 2:  # a line every 2 s
                last_append[0] = time.monotonic()
                appended.append(f"k1,{len(appended) + 2}")
                append(log, appended[-1:])
            return False

        wait_for("a line read after the takeover in the messages", a_new_line_logged, timeout=180)
        assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    finally:
        if submitter.poll() is None:
            submitter.kill()
        if srv.process is not None:
            srv.stop()
        cancel_live_flink_jobs_of(flink, job_id)


def stage_figures(api: Api, job_id: str) -> dict[str, dict]:
    """getExecutionDetails' stage metrics of the stages with a watermark: {stage: {name: scalar}}."""
    details = api.client.get(f"{api.jobs_path}/{job_id}/executionDetails").json()
    found = {}
    for stage in details.get("stages", []):
        figures = {m["name"]["name"]: m["scalar"] for m in stage.get("metrics", [])}
        if "DataWatermark" in figures:
            found[stage["stageId"]] = figures
    return found


def read_stage_lag(api: Api, job_id: str) -> float | None:
    """The SystemLag of the stage of a Pub/Sub read that pulls (`read_lag`); None while it has none."""
    found = read_lag(api, job_id)
    return found[1] if found else None


def read_lag(api: Api, job_id: str) -> tuple[str, float] | None:
    """The stage of a pipeline's Pub/Sub read that pulls (Beamport's reader), and its SystemLag; None while it has
    none. On Flink it is the vertex of the reader's one transform ("[1]Read/Read/Pull/Process..."). Prism names a
    stage by its transforms' outermost names, in the order it runs them: the pulling stage is the first named for
    the read alone ("stage-002: Read", Go's "stage-002: pubsubio.Read"); those after it, named for the read too,
    hold the read's dedup and, for a Java pipeline, PubsubIO's own steps after it ("stage-003: Read")."""
    figures = stage_figures(api, job_id)
    flink = [stage for stage in figures if "/Pull/" in stage]
    prism = sorted(stage for stage in figures if re.fullmatch(r"stage-\d+: (\S+\.)?Read", stage))
    stage = (flink or prism or [None])[0]
    return (stage, figures[stage]["SystemLag"]) if stage and "SystemLag" in figures[stage] else None


class Lines:
    """The lines a test appends to a job's input log, one "key,value,event time" each."""

    def __init__(self, log: Path):
        self.log = log
        self.sent: list[float] = []  # their event times, to the millisecond as written (engines keep no finer)

    def send(self) -> float:
        self.sent.append(round(time.time(), 3))
        append(self.log, [f"k{len(self.sent) % 2},{len(self.sent)},{self.sent[-1]:.3f}"])
        return self.sent[-1]

    def feeding(self, predicate):
        """`predicate`, for wait_for, sending a line a second meanwhile."""

        def step():
            if time.time() - self.sent[-1] >= 1:
                self.send()
            return predicate()

        return step


def the_watermark_follows_the_lines(api: Api, job_id: str, lines: Lines) -> str:
    """While lines arrive (one a second), a stage's watermark moves forward, up to a line sent after its first
    watermark was measured, and its age stays below the time since the first line; when lines stop, the watermark
    stays at the last line's event time at most, and its age grows. The stage's name."""
    first = wait_for("a watermark measured", lines.feeding(lambda: stage_figures(api, job_id)), timeout=240)
    stage, figures = next(iter(first.items()))
    later = lines.send()
    moved = wait_for(
        "the watermark past a later line",
        lines.feeding(
            lambda: (
                (stage_figures(api, job_id).get(stage) or {}).get("DataWatermark", 0) >= round(later * 1e6)
                and stage_figures(api, job_id)[stage]
            )
        ),
        timeout=180,
    )
    assert moved["DataWatermark"] > figures["DataWatermark"]
    # Fresh: the watermark is past the first line, so its age is less than the time since that line.
    assert moved["DataWatermarkAge"] < (time.time() - lines.sent[0])

    # Input stops: the watermark stays at the last line's event time at most, and its age grows.
    stopped = stage_figures(api, job_id)[stage]
    grown = wait_for(
        "the watermark's age grown with no input",
        lambda: (
            (now := stage_figures(api, job_id)[stage])["DataWatermarkAge"] > stopped["DataWatermarkAge"] + 1 and now
        ),
        timeout=120,
    )
    assert grown["DataWatermark"] <= round(lines.sent[-1] * 1e6)
    return stage


def test_a_prism_streaming_job_shows_its_stages_watermark_and_freshness(tmp_path, project):
    """Prism's Job API gives no watermark; the Prism scripts/prism-build makes logs its stages as a job starts and
    their watermarks every second (docs/engines.md, "Streaming signals"): a Prism job's stages are Prism's fused
    stages, named by their transforms, and a streaming job's watermark and freshness follow its input as on
    Flink. Its stages end DONE with the job."""
    srv = server_of_its_own(tmp_path, "prism")
    api = Api(srv.url, project)
    lines = Lines(tmp_path / "in.log")
    lines.send()
    submitter = submit_observed(srv, project, tmp_path, lines.log, tmp_path / "out.txt", "--event-times")
    job_id = None
    try:
        job_id = submitted_job(submitter, tmp_path)
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=240)
        stage = the_watermark_follows_the_lines(api, job_id, lines)
        assert re.fullmatch(r"stage-\d+: .*\bRead\b.*", stage), stage  # the stage that reads the lines
        assert "SystemLag" not in stage_figures(api, job_id)[stage]  # (its input is the Impulse: no lag figure)
        assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
        wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=120)
        states = {s["executionStageName"]: s["executionStageState"] for s in api.get(job_id).json()["stageStates"]}
        assert stage in states and "Prism" not in states, states
        assert set(states.values()) == {"JOB_STATE_DONE"}, states
    finally:
        if submitter.poll() is None:
            submitter.kill()
        srv.stop()


def test_a_flink_streaming_job_shows_its_watermark_freshness_and_counts(tmp_path, project, browser):  # noqa: F811
    """Dataflow's streaming signals of a Flink job (docs/engines.md, "Streaming signals"): each stage's data
    watermark follows the event times of the lines read and its age stays below the run's length; when lines
    stop coming the watermark stops and its age grows; the counts match the input, live and after a drain; the
    console charts them."""
    flink = flink_endpoints()
    srv = server_of_its_own(tmp_path, "flink")
    api = Api(srv.url, project)
    lines = Lines(tmp_path / "in.log")
    sent, out = lines.sent, tmp_path / "out.txt"
    lines.send()
    submitter = submit_observed(srv, project, tmp_path, lines.log, out, "--event-times")
    job_id = None
    page = None
    try:
        job_id = submitted_job(submitter, tmp_path)
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=240)
        stage = the_watermark_follows_the_lines(api, job_id, lines)
        assert stage_figures(api, job_id)[stage].get("ElementsOutPerSecond", 0) >= 0

        # The console charts them (two measurements make a line).
        page = browser.new_page()
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(f"{srv.url}/#/jobs/{project}/us-central1/{job_id}")
        page.locator("#signals-table td.DataWatermarkAge svg path").first.wait_for(timeout=120_000)
        assert re.fullmatch(r"Data freshness: \d+\.\d s", page.locator("#data-freshness").inner_text())
        # ... and its source's backlog (every line read: none).
        source_row = page.locator("#backlog-table tbody tr").first
        source_row.locator("td.BacklogBytes").wait_for(timeout=120_000)
        assert source_row.locator("td").first.inner_text() == "Read/Read"
        assert source_row.locator("td.BacklogBytes").inner_text().strip().endswith("0.0 B")
        assert script_errors == []

        # The counts match the input, while the job runs (its running stages' Flink counters, up to about 11 s
        # behind) and once Flink's runner hands its element counts over as its tasks end (drained).
        wait_for("every line written", lambda: out.exists() and len(out.read_text().splitlines()) >= len(sent))
        wait_for("the element count live", lambda: element_counts(api, job_id).get("Observe-out0") == len(sent))
        assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
        wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=120)
        counts = element_counts(api, job_id)
        assert counts.get("Observe-out0") == len(sent), counts
        assert user_metrics(api, job_id)["lines", False] == len(sent)
    finally:
        if page is not None:
            page.close()
        if submitter.poll() is None:
            submitter.kill()
        srv.stop()
        cancel_live_flink_jobs_of(flink, job_id)
