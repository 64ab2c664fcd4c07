"""Streaming jobs on Flink and Prism, seen as batch jobs are (issue 19): their user metrics in getMetrics and
DataflowRunner's `result.metrics().query()` while they run and after drain, their SDK workers' logs in the
job's messages, and their staged packages (an --extra_package wheel) and main session on every SDK worker.

Same clusters and markers as tests/test_streaming.py: Flink from BEAMPORT_TEST_FLINK_ENV, Prism from
BEAMPORT_TEST_PRISM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import Api, Server
from test_running_jobs import dataflow_flags, wait_state
from test_streaming import append, cancel_live_flink_jobs_of, flink_args, flink_endpoints, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flink")]

PIPELINE = Path(__file__).parent / "pipelines" / "streaming_observed.py"
PROBE = 'class Mark:\n    pass\n\n\ndef describe(line):\n    return "probe:" + line\n'


def probe_wheel(root: Path) -> tuple[Path, Path]:
    """A module Beamport's Python does not have: its source (for the submitter) and a wheel of it (staged)."""
    source = root / "probe-src"
    source.mkdir()
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


def observed_messages(api: Api, job_id: str) -> list[dict]:
    messages = api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000).json()
    return [m for m in messages.get("jobMessages", []) if m["messageText"].startswith("observed ")]


@pytest.fixture(params=["prism", "flink"])
def engine_server(request, tmp_path):
    if request.param == "prism":
        binary = os.environ.get("BEAMPORT_TEST_PRISM")
        if not binary or not Path(binary).is_file():
            pytest.skip("BEAMPORT_TEST_PRISM is not set: run the suite with scripts/test, which builds Prism")
        engine_args: tuple[str, ...] = ("--prism", binary)
    else:
        engine_args = flink_args(flink_endpoints())
    srv = Server(tmp_path / "data", extra_args=("--allow-path", str(tmp_path), "--workers", "1", *engine_args))
    srv.start()
    srv.engine = request.param
    yield srv
    srv.stop()


def test_a_streaming_job_reports_its_metrics_logs_and_runs_its_staged_module(engine_server, tmp_path, project):
    srv, api = engine_server, Api(engine_server.url, project)
    source, wheel = probe_wheel(tmp_path)
    log, out, final = tmp_path / "in.log", tmp_path / "out.txt", tmp_path / "metrics.json"
    append(log, ["k0,5", "k1,2", "k0,7"])
    (tmp_path / "work").mkdir()
    said, errors = open(tmp_path / "submitter.out", "w"), open(tmp_path / "submitter.err", "w")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")])}
    submitter = subprocess.Popen(
        [
            sys.executable,
            str(PIPELINE),
            str(log),
            str(out),
            "--metrics-until",
            "5",
            str(final),
            *dataflow_flags(srv, project, tmp_path / "work", "observed"),
            "--streaming",
            "--extra_package",
            str(wheel),
            "--save_main_session",
            "--labels",
            f"beamport_engine={srv.engine}",
        ],
        stdout=said,
        stderr=errors,
        env=env,
    )
    job_id = None
    try:
        submitted = lambda: submitter.poll() is not None or "\n" in (tmp_path / "submitter.out").read_text()  # noqa: E731
        wait_for("the job submitted", submitted, timeout=180)
        assert "JOB_ID " in (tmp_path / "submitter.out").read_text(), (tmp_path / "submitter.err").read_text()[-3000:]
        job_id = (tmp_path / "submitter.out").read_text().split("JOB_ID ", 1)[1].split()[0]
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=240)
        written = lambda: out.read_text() if out.exists() else ""  # noqa: E731
        lines = wait_for("three lines written", lambda: len(written().splitlines()) >= 3 and written())
        # The staged module ran on the SDK worker, and the main session was loaded there.
        assert sorted(lines.splitlines()) == [f"probe:{x}|main session loaded" for x in ("k0,5", "k0,7", "k1,2")]

        # Its log lines in its messages, as WARNINGs.
        wait_for("three lines logged", lambda: len(observed_messages(api, job_id)) >= 3, timeout=60)
        assert {m["messageImportance"] for m in observed_messages(api, job_id)} == {"JOB_MESSAGE_WARNING"}
        if srv.engine == "prism":
            # While it runs: the counter, the distribution and the gauge in getMetrics (Beam 2.62's Flink
            # runner hands a job's metrics over only as its tasks end: docs/engines.md).
            wait_for("three lines counted", lambda: user_metrics(api, job_id).get(("lines", False)) == 3, timeout=60)
            running = user_metrics(api, job_id)
            assert running["lines", True] == 3
            assert {k: running["values", False][k] for k in ("sum", "count", "min", "max")} == {
                "sum": 14,
                "count": 3,
                "min": 2,
                "max": 7,
            }
            assert running["last", False]["value"] == 7

        append(log, ["k1,1", "k0,9"])
        wait_for("five lines written", lambda: len(written().splitlines()) >= 5)
        if srv.engine == "prism":
            # DataflowRunner's result.metrics().query() in the submitting process sees the new input counted.
            submitter.wait(timeout=180)
        assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
        wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=120)
        submitter.wait(timeout=60)  # (Flink: once drained)
        assert submitter.returncode == 0, (tmp_path / "submitter.err").read_text()[-3000:]
        seen = json.loads(final.read_text())
        assert seen["Observe:lines"] == {"attempted": 5, "committed": 5}
        assert seen["Observe:values"]["attempted"] == [24, 5, 1, 9]  # sum, count, min, max
        final_metrics = user_metrics(api, job_id)
        assert final_metrics["lines", False] == final_metrics["lines", True] == 5
        # (DataflowMetrics reads no gauges, apache/beam#31788: getMetrics has it.)
        assert final_metrics["last", False]["value"] == final_metrics["last", True]["value"] == 9
        assert {m["messageText"] for m in observed_messages(api, job_id)} == {
            f"observed {x}" for x in ("k0,5", "k1,2", "k0,7", "k1,1", "k0,9")
        }
    finally:
        if submitter.poll() is None:
            submitter.kill()
        said.close()
        errors.close()
        if srv.engine == "flink":
            cancel_live_flink_jobs_of(flink_endpoints(), job_id)
