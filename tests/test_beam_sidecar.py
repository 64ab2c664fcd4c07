"""The server process never imports Beam: what needs Beam runs in its Beam sidecar (beamport/sidecar.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import Api, Server
from test_running_jobs import TEXT, dataflow_flags, read_output, run, texts, wait_state

from beamport.errors import ApiError
from beamport.sidecar import BeamSidecar, _dumps, _loads

# Runs `beamport serve` with an audit hook that writes down every import of a Beam module, and of one module
# the server surely imports (so that an empty record cannot mean the hook saw nothing).
AUDITED_SERVE = """
import sys
def _audit(event, args, _record=open({record!r}, "a", buffering=1)):
    if event == "import" and (args[0].split(".")[0] == "apache_beam" or args[0] == "beamport.service.jobs"):
        _record.write(args[0] + "\\n")
sys.addaudithook(_audit)
from beamport.cli.main import main
main()
"""
# Imports every module the server process runs (server.py imports most of them only when it builds the app).
IMPORT_THE_SERVER = """
import importlib, pkgutil, sys
import beamport.cli.main, beamport.server
for package in ("beamport.http", "beamport.service", "beamport.store"):
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        if not module.ispkg:
            importlib.import_module(f"{package}.{module.name}")
for name in ("beamport.engine.registry", "beamport.engine.flink", "beamport.files", "beamport.worker.pool"):
    importlib.import_module(name)
print(*sys.modules, sep="\\n")
"""
# A sidecar that answers ready, then does what the test asks on the first call.
FAKE_SIDECAR = """
import os, pickle, sys, time
from multiprocessing.connection import Connection
connection = Connection(int(sys.argv[-1]))
connection.send_bytes(pickle.dumps(("ready", {{"beam": "none", "pid": os.getpid()}})))
connection.recv_bytes()
{on_call}
"""


def _beam_modules_mapped(pid: int) -> list[str]:
    """Files of Beam's mapped into the process (its compiled modules, once any Beam module is imported)."""
    return sorted(
        {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if "/apache_beam/" in line}
    )


def _sidecar_of(server: Server) -> psutil.Process:
    (sidecar,) = [p for p in psutil.Process(server.process.pid).children() if "beamport.sidecar" in p.cmdline()]
    return sidecar


def test_importing_the_server_imports_no_beam():
    done = subprocess.run([sys.executable, "-c", IMPORT_THE_SERVER], capture_output=True, text=True, check=True)
    modules = done.stdout.splitlines()
    assert "beamport.service.jobs" in modules and [m for m in modules if m.split(".")[0] == "apache_beam"] == []


@pytest.mark.slow
def test_the_server_process_never_imports_beam(tmp_path, project):
    """A real job submitted with DataflowRunner, described (steps, stages) and run; a built-in template launched
    after the sidecar was killed: the server answers both, and has imported no Beam module, nor mapped one."""
    record = tmp_path / "imports.txt"
    srv = Server(
        tmp_path / "data",
        extra_args=("--allow-path", str(tmp_path)),
        python_args=("-c", AUDITED_SERVE.format(record=str(record))),
    ).start()
    try:
        api = Api(srv.url, project)
        (tmp_path / "in.txt").write_text(TEXT)
        run(
            [
                "-m",
                "apache_beam.examples.wordcount",
                f"--input={tmp_path / 'in.txt'}",
                f"--output={tmp_path / 'out' / 'counts'}",
                *dataflow_flags(srv, project, tmp_path, "described-elsewhere"),
            ]
        )
        (job,) = api.all_jobs()
        full = api.get(job["id"], view="JOB_VIEW_ALL").json()
        assert full["currentState"] == "JOB_STATE_DONE" and read_output(tmp_path / "out" / "counts")
        assert full["steps"] and full["pipelineDescription"]["executionPipelineStage"]

        # A sidecar that dies is started again: the next create waits for the new one.
        sidecar = _sidecar_of(srv)
        sidecar.kill()
        sidecar.wait(30)
        launched = api.client.post(
            f"/v1b3/projects/{project}/locations/us-central1/templates:launch",
            params={"gcsPath": "builtin://Word_Count"},
            json={
                "jobName": "after-a-restart",
                "parameters": {"inputFile": str(tmp_path / "in.txt"), "output": str(tmp_path / "again" / "counts")},
            },
            timeout=300,
        )
        assert launched.status_code == 200, launched.text
        job_id = launched.json()["job"]["id"]
        assert api.get(job_id, view="JOB_VIEW_ALL").json()["steps"]
        done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
        assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
        assert _sidecar_of(srv).pid != sidecar.pid

        assert _beam_modules_mapped(srv.process.pid) == []
        assert _beam_modules_mapped(_sidecar_of(srv).pid) != []  # what the check would see, had Beam come in
    finally:
        srv.stop()
    assert record.read_text().split() == ["beamport.service.jobs"]


@pytest.fixture
def pipeline_bytes() -> bytes:
    import apache_beam as beam

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(["a", "b"]) | "Upper" >> beam.Map(str.upper) | beam.combiners.Count.PerElement()
    return pipeline.to_runner_api().SerializeToString()


def test_the_sidecar_describes_a_pipeline_and_is_started_again_when_it_dies(pipeline_bytes):
    sidecar = BeamSidecar()
    sidecar.start()  # the first call waits for it
    try:
        graph = sidecar.call("describe_pipeline", pipeline_bytes, "pipeline.pb", None)
        assert any(step["properties"]["user_name"] == "Upper" for step in graph["steps"])
        assert graph["pipelineDescription"]["executionPipelineStage"]
        with pytest.raises(ApiError) as refused:
            sidecar.call("describe_pipeline", b"\xff not a pipeline", "junk.pb", None)
        assert refused.value.status == "INVALID_ARGUMENT" and "junk.pb is not a Beam pipeline" in refused.value.message
        with pytest.raises(RuntimeError, match="no_such_call"):
            sidecar.call("no_such_call")

        first = sidecar.pid
        os.kill(first, signal.SIGKILL)
        assert sidecar.call("update_incompatibilities", pipeline_bytes, pipeline_bytes, {}) == []
        assert sidecar.pid not in (None, first)
    finally:
        sidecar.stop()
    assert sidecar.pid is None


def _fake(on_call: str, **kwargs) -> BeamSidecar:
    return BeamSidecar([sys.executable, "-c", FAKE_SIDECAR.format(on_call=on_call)], **kwargs)


def test_a_sidecar_that_cannot_start_or_dies_in_a_call_is_unavailable():
    never = BeamSidecar([sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(ApiError) as refused:
        never.call("describe_pipeline", b"", "p.pb", None)
    assert refused.value.status == "UNAVAILABLE" and "exited (code 3) before it was ready" in refused.value.message

    dies = _fake("os._exit(7)")
    try:
        with pytest.raises(ApiError) as refused:
            dies.call("describe_pipeline", b"", "p.pb", None)
        assert refused.value.status == "UNAVAILABLE" and "exited during this call" in refused.value.message
        deadline = time.monotonic() + 30  # started again at once, in the background
        while dies.pid is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dies.pid is not None
    finally:
        dies.stop()


def test_a_sidecar_past_its_deadline_is_replaced():
    stuck = _fake("time.sleep(600)", deadline_s=1.0)
    try:
        with pytest.raises(ApiError) as refused:
            stuck.call("describe_pipeline", b"", "p.pb", None)
        assert refused.value.status == "DEADLINE_EXCEEDED"
    finally:
        stuck.stop()


def test_only_plain_data_crosses():
    # A class of Beam's, named in an answer (protocol 0: MARK, 'ok', GLOBAL module name, TUPLE): refused
    # without being looked up, so nothing is imported.
    answer = b"(S'ok'\ncapache_beam.coders.coders\nBytesCoder\nt."
    with pytest.raises(Exception, match="only plain data"):
        _loads(answer)
    plain = ("ok", {"steps": [{"name": "s1", "size": 1.5, "raw": b"\0", "set": {1}}], "none": None})
    assert _loads(_dumps(plain)) == plain
    lying = _fake(f"connection.send_bytes({answer!r}); time.sleep(600)")
    try:
        with pytest.raises(Exception, match="only plain data"):
            lying.call("describe_pipeline", b"", "p.pb", None)
    finally:
        lying.stop()
