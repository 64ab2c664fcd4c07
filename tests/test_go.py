"""Beam Go pipelines submitted by Beam Go's own Dataflow runner run on the embedded engine (batch) and on Prism:
tests/go/wordcount (Beam Go SDK v2.77.0), submitted with gs:// staging and only the variables `beamport emulators
env` prints (a GCS endpoint and a metadata server for Google's default credentials), ends DONE with the output of
the same binary on Go's direct runner, its counter and the Go harness's log lines in the job's messages, on both;
a failing DoFn's Go error fails the job; a cancel leaves no Go worker. A streaming Go pipeline with Beam Go's
pubsubio (tests/go/pubsub_sums) reads from and writes to the Pub/Sub emulator on Prism through Beamport's Python
replacements of the native transforms, and drains. Needs Prism (BEAMPORT_TEST_PRISM), the GCS and Pub/Sub
emulators and Go (scripts/test builds them all)."""

from __future__ import annotations

import collections
import itertools
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import Api, Server, beamport_command, required_path
from test_emulators import go_program, need_emulator, need_gcs_emulator
from test_java import _alive_in
from test_pubsub import Topics, publish_sums_input
from test_running_jobs import TEXT, wait_state
from test_streaming import START_S, wait_for
from test_streaming_observed import read_stage_lag, source_backlog

from beamport import emulators

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("go")]

PROJECT = "go-demo"
BUCKET = "go-jobs"


ON_PRISM = '--labels={"beamport_engine": "prism"}'


class Go:
    """A Go program (the wordcount binary unless named), on Go's direct runner or submitted to a Beamport server by
    Go's Dataflow runner."""

    def __init__(self, binary: Path, server: Server, base: Path, env: dict[str, str]):
        self.binary, self.server, self.base, self.env = binary, server, base, env
        self.input = base / "input.txt"
        self.input.write_text(TEXT)

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        # Only what `beamport emulators env` prints (and a HOME without gcloud's files): as a user's shell would.
        env = {**self.env, "HOME": str(self.base)}
        done = subprocess.run(
            [str(self.binary), *args], env=env, cwd=self.base, capture_output=True, text=True, timeout=timeout
        )
        return done

    def direct(self, output: Path, input_: str | None = None) -> None:
        done = self.run("--runner=direct", f"--input={input_ or self.input}", f"--output={output}")
        assert done.returncode == 0, done.stderr[-5000:]

    def dataflow(self, output: Path, *args: str, input_: str | None = None) -> tuple[subprocess.CompletedProcess, str]:
        """Submit the wordcount; the run and the job's id."""
        return self.submit("go-wordcount", f"--input={input_ or self.input}", f"--output={output}", *args)

    def submit(self, prefix: str, *args: str, name: str = "") -> tuple[subprocess.CompletedProcess, str]:
        """Submit with the flags of issue 18 and the program's own; the run and the (newest) job's id (name: the
        job's, else a new one)."""
        name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
        done = self.run(
            "--runner=dataflow",
            f"--dataflow_endpoint={self.server.url}/",
            f"--project={PROJECT}",
            "--region=us-central1",
            f"--job_name={name}",
            f"--staging_location=gs://{BUCKET}/staging",
            f"--temp_location=gs://{BUCKET}/temp",
            f"--worker_binary={self.binary}",
            *args,
        )
        job = max(
            (j for j in Api(self.server.url, PROJECT).all_jobs() if j["name"] == name), key=lambda j: j["createTime"]
        )
        return done, job["id"]

    def program(self, name: str) -> Go:
        """Another of tests/go's programs, submitted to the same server with the same variables."""
        return Go(go_program(name), self.server, self.base, self.env)


@pytest.fixture(scope="module")
def go(tmp_path_factory) -> Go:
    go = go_server(tmp_path_factory.mktemp("go"))
    yield go
    go.server.stop()


def go_server(base: Path, *engines: str) -> Go:
    """A started server with Prism (and `engines`' flags), the GCS, metadata and Pub/Sub endpoints Go's runner
    needs (a bucket made), and the wordcount program."""
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    need_gcs_emulator()
    need_emulator(emulators.PUBSUB)
    need_emulator(emulators.BIGQUERY)
    binary = go_program("wordcount")
    srv = Server(
        base / "data",
        extra_args=(
            *("--allow-path", str(base), "--workers", "2", "--prism", str(prism), *engines),
            *("--emulators", "gcs,metadata,pubsub,bigquery", "--metadata-project", PROJECT),
        ),
    ).start()
    printed = beamport_command("emulators", "env", "--data-dir", str(srv.data_dir)).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines() if "=" in line)
    assert set(env) == {
        "STORAGE_EMULATOR_HOST",
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "PUBSUB_EMULATOR_HOST",
        "BIGQUERY_EMULATOR_HOST",
        "BIGQUERY_STORAGE_EMULATOR_HOST",
        emulators.GATEWAY.variable,  # the Google API gateway (BigQuery for Go workers)
    }
    storage(env).create_bucket(BUCKET)
    return Go(binary, srv, base, env)


def storage(env: dict[str, str]):
    from google.cloud.storage import Client

    return _on_emulator(Client, "STORAGE_EMULATOR_HOST", env)


def bigquery(env: dict[str, str]):
    """Google's Python BigQuery client on the server's emulator (as test_bigquery.py's)."""
    from google.cloud.bigquery import Client

    return _on_emulator(Client, "BIGQUERY_EMULATOR_HOST", env)


def _on_emulator(client_class, variable: str, env: dict[str, str]):
    """A Google client made while `variable` names the server's emulator (which it reads then), anonymous."""
    from google.auth.credentials import AnonymousCredentials

    os.environ[variable] = env[variable]
    try:
        return client_class(project=PROJECT, credentials=AnonymousCredentials())
    finally:
        del os.environ[variable]


def word_counts(text: str) -> dict[str, int]:
    """What tests/go/bigquery_counts counts (its words are wordcount's: [a-zA-Z]+('[a-z])?)."""
    return dict(collections.Counter(m.group(0) for m in re.finditer(r"[a-zA-Z]+('[a-z])?", text)))


def write_counts_to_bigquery(go: Go, engine: str, *args: str) -> str:
    """tests/go/bigquery_counts counts go.input into a new table with Beam Go's bigqueryio.Write, submitted by Go's
    Dataflow runner (`args`: its engine's label); the job ends DONE on `engine` and the table holds the counts
    (read by Google's Python client). The table's DATASET.TABLE."""
    client = bigquery(go.env)
    dataset = f"go_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)  # Beam Go's bigqueryio makes tables, not datasets
    table = f"{dataset}.counts"
    program = go.program("bigquery_counts")
    done, job_id = program.submit(
        "go-bq-write", f"--table_project={PROJECT}", f"--table={table}", f"--input={go.input}", "--async", *args
    )
    assert done.returncode == 0, done.stderr[-5000:]
    api = Api(go.server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=600)
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_DONE", messages(api, job_id)[-30:]
    assert any(text.startswith(f"The job is running on {engine}") for text in messages(api, job_id))
    rows = client.query(f"SELECT word, count FROM `{PROJECT}.{table}`").result()
    assert {row["word"]: row["count"] for row in rows} == word_counts(TEXT)
    return table


def read_output(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines())


def messages(api: Api, job_id: str) -> list[str]:
    answer = api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000).json()
    return [m.get("messageText", "") for m in answer.get("jobMessages", [])]


@pytest.mark.parametrize("where", ["local", "gs"])
def test_wordcount_runs_done_with_the_direct_runners_output(go, where):
    """A batch Go job runs on the embedded engine (FnApiRunner starts the worker binary) unless it names another:
    local files there; gs:// files (read and written by the Go worker through the GCS endpoint) on Prism, named
    by the job's label."""
    input_ = None
    engine = "the embedded engine" if where == "local" else "Prism"
    if where == "gs":  # read by the Go worker itself, through the GCS endpoint
        storage(go.env).bucket(BUCKET).blob("input.txt").upload_from_string(TEXT)
        input_ = f"gs://{BUCKET}/input.txt"
    direct, out = go.base / where / "direct.txt", go.base / where / "dataflow.txt"
    go.direct(direct, input_)
    # Go's runner polls a job every 30 s: the local run waits for it to say DONE, the gs:// one asks the API.
    done, job_id = go.dataflow(out, *(["--async", ON_PRISM] if where == "gs" else []), input_=input_)
    assert done.returncode == 0, done.stderr[-5000:]
    api = Api(go.server.url, PROJECT)
    if where == "gs":
        wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=300)
    else:
        assert "succeeded" in done.stderr, done.stderr[-5000:]
    job = api.get(job_id).json()
    assert job["jobMetadata"]["sdkVersion"]["versionDisplayName"] == "Apache Beam SDK for Go"
    ran_as_the_direct_runner(api, job_id, out, direct, engine)


def ran_as_the_direct_runner(api: Api, job_id: str, out: Path, direct: Path, engine: str) -> None:
    """The wordcount job ran DONE on `engine`, with the direct runner's output, its worker's log lines in its
    messages and its counter in getMetrics."""
    job = api.get(job_id).json()
    assert job["currentState"] == "JOB_STATE_DONE", messages(api, job_id)[-30:]
    assert read_output(out) == read_output(direct) != []
    texts = messages(api, job_id)
    assert any(text.startswith(f"The job is running on {engine}") for text in texts), texts
    # The Go harness's own log lines (Beam Go's textio logs where it writes, in the worker) are job messages.
    assert f"Writing to {out}" in texts, texts
    # The Go counter (wordcount/words, one per word read) through getMetrics, as a Python job's would be.
    words = sum(int(line.rsplit(": ", 1)[1]) for line in read_output(direct))
    metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
    counted = [
        m
        for m in metrics
        if m["name"]["origin"] == "user"
        and m["name"]["name"] == "words"
        and not m["name"].get("context", {}).get("tentative")
    ]
    assert [m["scalar"] for m in counted] == [words], metrics


def test_beam_gos_bigquery_io_writes_and_reads_the_bigquery_emulator(go):
    """Beam Go's bigqueryio calls Google's Go BigQuery client, which names no endpoint and reads no emulator
    variable: the job's Go workers reach the bigquery emulator through serve's Google API gateway (HTTPS_PROXY,
    the gateway's CA, its credentials: go_boot gives them), the program and its submission naming nothing of it.
    One job writes the counts to a table (the embedded engine), another reads them back with a query (Prism)."""
    table = write_counts_to_bigquery(go, "the embedded engine")
    out = go.base / "bigquery" / "read.txt"
    program = go.program("bigquery_counts")
    done, job_id = program.submit(
        "go-bq-read", f"--table_project={PROJECT}", f"--table={table}", f"--output={out}", "--async", ON_PRISM
    )
    assert done.returncode == 0, done.stderr[-5000:]
    api = Api(go.server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=300)
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_DONE", messages(api, job_id)[-30:]
    assert read_output(out) == sorted(f"{word}: {count}" for word, count in word_counts(TEXT).items())


def test_a_failing_dofn_fails_the_job_with_the_go_error(go):
    """The DoFn's error, as Beam Go's harness reports it through Prism, is in the job's messages; the work item
    is tried again as any job's (4 failures), then the job fails."""
    _, job_id = go.dataflow(go.base / "failing.txt", "--fail_on=fox", "--async")
    api = Api(go.server.url, PROJECT)
    job = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=600)
    assert job["currentState"] == "JOB_STATE_FAILED"
    text = "\n".join(messages(api, job_id))
    assert "DoFn[UID:" in text and "main.extractFn] failed:\nwordcount refuses the word fox" in text, text[-5000:]
    assert not (go.base / "failing.txt").exists()


def go_workers(server: Server) -> list[psutil.Process]:
    """The job's Go worker processes (the staged binary in worker mode), under the server."""
    assert server.process is not None
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "--worker=true" in process.cmdline():
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def test_cancel_leaves_no_go_worker(go):
    _, job_id = go.dataflow(go.base / "cancelled.txt", "--slow_millis=2000", "--async")
    api = Api(go.server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=300)
    deadline = time.monotonic() + 300
    while not (workers := go_workers(go.server)):
        assert time.monotonic() < deadline, "no Go worker started"
        assert api.get(job_id).json()["currentState"] == "JOB_STATE_RUNNING"
        time.sleep(0.2)
    groups = {os.getpgid(worker.pid) for worker in workers}
    response = api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"})
    assert response.status_code == 200, response.text
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=300)
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, alive
    deadline = time.monotonic() + 60
    while left := [p for p in psutil.process_iter() if _alive_in(p, groups)]:
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


def test_pubsub_windowed_sums_with_a_duplicate_then_drained(go, monkeypatch):
    """Beam Go's pubsubio.Read (id and timestamp attributes) -> fixed windows -> a sum per key -> pubsubio.Write:
    Dataflow-native transforms, which staging replaces with Beamport's Python ones in a Python environment of its
    own, beside the job's Go one, on Prism. Each closed window's sums come out once (a duplicate id counted once),
    every message read is acknowledged, and a drain fires the open window and ends DRAINED, with no Go worker
    left."""
    sums = PubsubSums(go, "go-sums", monkeypatch)
    assert sums.topics.backlog() == 0, "every message read was acknowledged"
    assert any(text.startswith("The job is running on Prism") for text in messages(sums.api, sums.job_id))
    workers = go_workers(go.server)
    assert workers, "the job's Go worker runs"
    sums.drained()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive and not go_workers(go.server), alive


def test_a_job_reading_a_source_of_gos_own_drains(go):
    """tests/go/periodic_counts: Beam Go's periodic.Sequence (an unbounded splittable DoFn of Go's own, which never
    sees Beamport's drain signal) -> fixed windows -> a count per window, on Prism. Drained as Dataflow drains such
    a source (its remainder truncated: engine/harness_process.py, Drain, through the Go launcher's control relay),
    the job ends DRAINED: every window whole but the last, which fired with the numbers it had, each number once,
    and no Go worker left."""
    counts = PeriodicCounts(go, "go-periodic")
    workers = go_workers(go.server)
    assert workers, "the job's Go worker runs"
    counts.drained()
    gone, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive and not go_workers(go.server), alive


class PeriodicCounts:
    """tests/go/periodic_counts submitted, running, and two of its windows counted: `drained()` then drains it."""

    def __init__(self, go: Go, name: str):
        self.out = go.base / f"{name}.txt"
        done, self.job_id = go.program("periodic_counts").submit(name, f"--output={self.out}", "--async")
        assert done.returncode == 0, done.stderr[-5000:]
        self.api = Api(go.server.url, PROJECT)
        assert self.api.get(self.job_id).json()["type"] == "JOB_TYPE_STREAMING"
        wait_for("two windows counted", lambda: len(self.windows()) >= 2, START_S)

    def windows(self) -> list[list[int]]:
        """The windows counted so far: [start (ms), count, least number, greatest number] each, in order."""
        return [[int(x) for x in line.split(",")] for line in read_output(self.out)] if self.out.exists() else []

    def drained(self) -> None:
        """Drained: the job ends DRAINED; 2 s windows of a number each 200 ms from a window's start hold 10 each but
        the last, which holds those up to the drain; each number once, in the window of its time."""
        response = self.api.update(self.job_id, {"requestedState": "JOB_STATE_DRAINING"})
        assert response.status_code == 200, response.text
        wait_state(self.api, self.job_id, {"JOB_STATE_DRAINED"}, timeout=START_S)
        counted = self.windows()
        *whole, last = counted
        assert [count for _, count, _, _ in whole] == [10] * len(whole), counted
        assert 1 <= last[1] <= 10, counted
        assert [start for start, *_ in counted] == [counted[0][0] + 2000 * i for i in range(len(counted))], counted
        assert counted[0][2] == 0 and all(most - least == count - 1 for _, count, least, most in counted), counted
        assert all(after[2] == before[3] + 1 for before, after in itertools.pairwise(counted)), counted


class PubsubSums:
    """tests/go/pubsub_sums submitted, reading input published with a duplicate, and running: each closed window's
    sums are out, once. `drained()` then drains it."""

    def __init__(self, go: Go, name: str, monkeypatch):
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", go.env["PUBSUB_EMULATOR_HOST"])  # for the test's own clients
        self.topics = topics = Topics(name)
        minute, self.later = publish_sums_input(topics, "g")
        self.program = go.program("pubsub_sums")
        done, self.job_id = self.submit(name)
        assert done.returncode == 0, done.stderr[-5000:]
        self.api = api = Api(go.server.url, PROJECT)
        # Go's runner marks the job streaming (pubsubio's read is unbounded), so it can be drained (batch jobs cannot).
        assert api.get(self.job_id).json()["type"] == "JOB_TYPE_STREAMING"
        self.closed = sorted([f"a,3,{minute}", f"a,10,{minute + 60}", f"b,5,{minute}"])

        def summed_or_ended() -> bool:
            if len(topics.pull_output()) >= len(self.closed):
                return True
            return api.get(self.job_id).json().get("currentState") in {"JOB_STATE_FAILED", "JOB_STATE_DONE"}

        wait_for("the closed windows' sums", summed_or_ended, START_S)
        wait_state(api, self.job_id, {"JOB_STATE_RUNNING"}, timeout=START_S)  # (a failed job's messages say why)
        assert topics.pull_output() == self.closed
        # The read's backlog (Beamport's reader, in a Python environment beside Go's, counts its subscription), a
        # figure of pubsubio.Read's step, and its stage's lag: none left once all is read and acknowledged.
        step = "pubsubio.Read/External"
        no_backlog = {(step, "BacklogBytes"): 0, (step, "BacklogElements"): 0}
        wait_for("no backlog", lambda: source_backlog(api, self.job_id) == no_backlog, 60, (api, self.job_id))
        wait_for("the read's lag at 0", lambda: read_stage_lag(api, self.job_id) == 0, 60, (api, self.job_id))

    def submit(self, prefix: str, *args: str, name: str = "") -> tuple[subprocess.CompletedProcess, str]:
        return self.program.submit(
            prefix,
            f"--input_subscription={self.topics.input_subscription}",
            f"--output_topic={self.topics.output}",
            "--async",
            *args,
            name=name,
        )

    def drained(self, open_sum: int = 7) -> None:
        """Drained as Beam asks: the job ends DRAINED, the open window fired (its sum `open_sum`), nothing counted
        twice."""
        assert self.api.update(self.job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
        wait_state(self.api, self.job_id, {"JOB_STATE_DRAINED"}, timeout=START_S)
        wait_for("the open window's sum", lambda: len(self.topics.pull_output()) > len(self.closed), 60)
        time.sleep(1)  # (a sum published twice would come by now)
        assert self.topics.pull_output() == sorted([*self.closed, f"c,{open_sum},{self.later}"])


def test_a_server_without_prism_takes_go_jobs(tmp_path):
    """No Prism, no Flink: a batch Go job is accepted (the embedded engine runs it); a streaming one waits in
    JOB_STATE_PENDING, saying that the server has no streaming engine, as a Python job would. The jobs are what
    Beam Go's Dataflow runner sends, in short: their user agent names the Go SDK."""
    srv = Server(tmp_path / "data", extra_args=("--allow-path", str(tmp_path), "--workers", "0")).start()
    try:
        api = Api(srv.url, PROJECT)
        go_agent = {"userAgent": {"name": "Apache Beam SDK for Go", "version": "2.77.0"}}
        for name, job_type in (("go-batch", "JOB_TYPE_BATCH"), ("go-streaming", "JOB_TYPE_STREAMING")):
            response = api.client.post(api.jobs_path, json={"name": name, "type": job_type, "environment": go_agent})
            assert response.status_code == 200, response.text
        jobs = {job["name"]: job for job in api.all_jobs()}
        assert not any("streaming engine" in text for text in messages(api, jobs["go-batch"]["id"]))
        streaming = jobs["go-streaming"]
        assert streaming["currentState"] == "JOB_STATE_PENDING"
        assert any("no streaming engine" in text for text in messages(api, streaming["id"]))
    finally:
        srv.stop()


def test_the_launcher_starts_the_worker_as_beams_go_boot_does(tmp_path):
    """go_boot with a stand-in worker binary that prints what it was given, and a provisioning service of our
    own: Prism's quoted id stripped, the endpoints and the options file as Beam Go's boot hands them over."""
    import json
    import sys
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
    from google.protobuf import struct_pb2

    asked_by = []

    class Provision(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
        def GetProvisionInfo(self, request, context):
            asked_by.append(dict(context.invocation_metadata()).get("worker_id"))
            options = struct_pb2.Struct()
            options.update({"beam:option:go_options:v1": {"options": {"input": "/in.txt"}}})
            return beam_provision_api_pb2.GetProvisionInfoResponse(
                info=beam_provision_api_pb2.ProvisionInfo(
                    pipeline_options=options,
                    logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:7001"),
                    control_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:7002"),
                    runner_capabilities=["beam:protocol:control_response_elements_embedding:v1"],
                )
            )

    server = grpc.server(futures.ThreadPoolExecutor(2))
    beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(Provision(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    worker = tmp_path / "worker"
    worker.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nenv\n')
    worker.chmod(0o755)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "beamport.engine.go_boot", f"--worker_binary={worker}"]
            + [f"--semi_persist_dir={tmp_path}", "--id='worker-3'", f"--provision_endpoint=127.0.0.1:{port}"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop(0)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert asked_by == ["worker-3"]
    workdir = tmp_path / "go-worker-worker-3"
    assert printed[:5] == [
        "--worker=true",
        "--id=worker-3",
        "--logging_endpoint=localhost:7001",
        "--control_endpoint=localhost:7002",
        f"--semi_persist_dir={workdir}",
    ]
    assert "RUNNER_CAPABILITIES=beam:protocol:control_response_elements_embedding:v1" in printed
    options_file = next(line.split("=", 1)[1] for line in printed if line.startswith("PIPELINE_OPTIONS_FILE="))
    assert json.loads(Path(options_file).read_text()) == {
        "beam:option:go_options:v1": {"options": {"input": "/in.txt"}}
    }
