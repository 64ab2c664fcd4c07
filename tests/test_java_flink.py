"""Beam Java pipelines on Flink, submitted by Beam Java's own DataflowRunner: the Flink cluster's SDK worker pool
starts a Java SDK harness over the job's staged jars (docs/engines.md, "Java on Flink"). A batch pipeline's output
and counter are the DirectRunner's; a streaming one runs until cancelled, its counter live and its logs in its
messages; it starts from a snapshot and is updated with its state; and streaming PubsubIO runs there. The Flink
cluster is scripts/test's (BEAMPORT_TEST_FLINK_ENV), the pipelines tests/java's (BEAMPORT_TEST_JAVA)."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import Api, Server, required_path
from test_java import (
    PROJECT,
    TEXT,
    V1,
    V2,
    Java,
    drained_whole,
    harness_said,
    impulses_counted,
    is_warm_jvm,
    messages,
    read_output,
    window_files,
)
from test_java_emulators import java_with_emulators, pubsub_echo  # noqa: F401 (a fixture)
from test_running_jobs import wait_state
from test_streaming import START_S, flink_args, flink_endpoints, flink_state, wait_for

from beamport.engine import sdk_boot

# One Flink job at a time, as test_streaming's.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flink")]


@pytest.fixture(scope="module")
def java_on_flink(tmp_path_factory) -> Java:
    """A server with the Flink cluster (its streaming engine), whose SDK worker pool starts Java SDK harnesses."""
    class_path = required_path("BEAMPORT_TEST_JAVA", "builds the Java pipelines (scripts/java-pipelines)")
    flink = flink_endpoints()
    base = tmp_path_factory.mktemp("java-flink")
    srv = Server(base / "data", extra_args=("--allow-path", str(base), "--workers", "2", *flink_args(flink))).start()
    java = Java(class_path.read_text().strip(), srv, base)
    java.flink = flink  # type: ignore[attr-defined]
    yield java
    srv.stop()


@pytest.fixture(scope="module")
def direct_features(java_on_flink) -> tuple[list[str], str]:
    """Features' output and printed lines on Beam Java's DirectRunner, once."""
    out = java_on_flink.base / "direct" / "out"
    done = java_on_flink.direct("Features", out)
    return read_output(out), done.stdout


def pool_workers(flink: dict, marker: str) -> list[psutil.Process]:
    """The SDK workers the Flink cluster's SDK worker pool runs whose command lines hold `marker`."""
    return pool_processes(flink, lambda command: marker in command)


def pool_processes(flink: dict, chosen: Callable[[list[str]], bool]) -> list[psutil.Process]:
    """The processes under the Flink cluster's SDK worker pool whose command lines are `chosen`."""
    port = flink["BEAMPORT_FLINK_SDK_POOL"].rpartition(":")[2]
    found = []
    for process in psutil.process_iter():
        try:
            command = process.cmdline()
            if "beamport.engine.worker_pool" in command and f"--service_port={port}" in command:
                for child in process.children(recursive=True):
                    try:
                        if chosen(child.cmdline()):
                            found.append(child)
                    except psutil.NoSuchProcess:
                        pass
        except psutil.NoSuchProcess:
            pass
    return found


def pool_jvms(flink: dict) -> list[psutil.Process]:
    """The Java SDK harnesses the Flink cluster's SDK worker pool runs: in JVMs of their own, or in the warm JVMs of
    the pool's Java spares that a job took (engine/java_warm.py)."""
    return pool_processes(flink, lambda command: HARNESS in command or (is_warm_jvm(command) and taken(command)))


def pool_warm_jvms(flink: dict) -> list[psutil.Process]:
    """The warm JVMs of the pool's Java spares that wait for a job (or are still warming up for one)."""
    return pool_processes(flink, lambda command: is_warm_jvm(command) and not taken(command))


def taken(warm_jvm_command: list[str]) -> bool:
    """Whether a launcher took a warm JVM: it renames the JVM's socket (its last argument) to socket.taken
    (java_warm.claim). (A JVM still warming up has neither: it is no harness yet.)"""
    return Path(warm_jvm_command[-1] + ".taken").exists()


HARNESS = "org.apache.beam.fn.harness.FnHarness"
ON_FLINK = '--labels={"beamport_engine": "flink"}'


def test_a_java_batch_pipeline_runs_on_flink_as_on_beams_direct_runner(java_on_flink, direct_features):
    """Features (a counter, a side input, a GroupByKey) on Flink, labelled so: the cluster's SDK worker pool starts a
    Java SDK harness over the job's staged jars; the output and the counter are the DirectRunner's. (Runner v2's
    submission: both paths stage the same portable pipeline, which is what Flink runs; test_java.py submits this
    pipeline by both.)"""
    java, path = java_on_flink, V2
    out = java.base / f"flink-{path}" / "out"
    done, job_id = java.dataflow("Features", out, path, ON_FLINK)
    assert "FINAL_STATE DONE" in done.stdout, done.stdout + done.stderr[-5000:]
    assert read_output(out) == direct_features[0] != []
    words = len(TEXT.split())
    assert re.search(rf"COUNTER words attempted={words}\b", direct_features[1])
    assert re.search(rf"COUNTER words attempted={words}\b", done.stdout), done.stdout
    api = Api(java.server.url, PROJECT)
    job = api.get(job_id).json()
    assert job["labels"]["beamport_engine"] == "flink" and job["currentState"] == "JOB_STATE_DONE"
    assert flink_state(java.flink, job_id) == "FINISHED"  # type: ignore[attr-defined]
    # RUNNING while its Flink job ran, though its stages' tasks never all ran at once (a batch job's run in turn).
    assert any(text.startswith("The job is running on Flink") for text in messages(api, job_id))


def test_a_java_job_on_flink_runs_in_the_warm_jvm_of_the_pools_java_spare(java_on_flink, direct_features):
    """The cluster's SDK worker pool keeps a JVM warm for the next Java job, as Beamport's own workers do
    (engine/java_warm.py): a while after a Java job's worker has fetched its jars, the pool starts a Java spare whose
    JVM warms up over them in the sandbox. The next job with those jars runs its harness there (its messages say so;
    the waiting JVM ends with the job) to the DirectRunner's output, and the finished workers' directories (their
    jars) are removed."""
    java = java_on_flink
    flink = java.flink  # type: ignore[attr-defined]
    if not pool_warm_jvms(flink):  # none yet (a Java job ran before in this cluster, or this test runs alone)
        first = java.dataflow("Features", java.base / "before-warm" / "out", V2, ON_FLINK)[0]
        assert "FINAL_STATE DONE" in first.stdout, first.stdout + first.stderr[-5000:]
    warm = wait_for("a warm JVM in the pool", lambda: pool_warm_jvms(flink), 90)
    out = java.base / "warm" / "out"
    done, job_id = java.dataflow("Features", out, V1, ON_FLINK)
    assert "FINAL_STATE DONE" in done.stdout, done.stdout + done.stderr[-5000:]
    assert read_output(out) == direct_features[0] != []
    said = "\n".join(messages(Api(java.server.url, PROJECT), job_id))
    assert "The Java SDK harness ran in a JVM this worker started ahead of the job" in said, said[-5000:]
    gone, alive = psutil.wait_procs(warm, timeout=60)  # it ran the job's harness, and ended with it
    assert not alive, alive
    sdk = Path(os.environ["BEAMPORT_TEST_FLINK_ENV"]).parent / "sdk"  # where the pool's workers have directories

    def only_spares_left() -> bool:
        return not any((directory / sdk_boot.JAVA_SPEC_FILE).exists() for directory in sdk.glob("java-*"))

    wait_for("the finished Java workers' directories removed", only_spares_left, 60)


def test_a_streaming_java_pipeline_runs_on_flink_until_drained(java_on_flink):
    """StreamingImpulses with --streaming on a server whose streaming engine is Flink: it runs there, each
    window's file holds exactly that window's impulses, once, its counter is live in getMetrics, its harness's lines
    are in the job's messages; a drain truncates its PeriodicImpulse (the launcher's relay drops its remainder), the
    open window fires, and the job ends DRAINED with its JVM."""
    java = java_on_flink
    out = java.base / "impulses" / "imp"
    others = {jvm.pid for jvm in pool_jvms(java.flink)}  # type: ignore[attr-defined]
    done, job_id = java.dataflow("StreamingImpulses", out, V2, given_input=False)
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)
    drained = False
    try:
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=300)
        windows = wait_for(
            "three windows' files", lambda: len(w := window_files(out)) >= 3 and w, START_S, (api, job_id)
        )
        for (start, end), impulses in windows.items():
            assert impulses == list(range(start, end, 100)), (start, impulses)  # an impulse every 100 ms, each once
        # Live, as Flink shows it (its metrics lag by up to about 11 s): the step comes from the harness's reports.
        impulses_counted(api, job_id, 20 * len(windows), within=90)
        # TextIO's WriteFiles logging, in the harness: its log stream reaches the job's messages a little after the
        # files it tells of (later still on a busy machine).
        harness_said(api, job_id, "Opening writer")
        jvms = [jvm for jvm in pool_jvms(java.flink) if jvm.pid not in others]  # type: ignore[attr-defined]
        assert jvms, "the job's Java SDK harness runs in the cluster's SDK worker pool"
        drained_whole(api, job_id, out, jvms, timeout=180)
        drained = True
        assert flink_state(java.flink, job_id) == "FINISHED"  # type: ignore[attr-defined]
    finally:
        if not drained:
            api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"})


def test_a_java_job_on_flink_starts_from_a_snapshot_with_its_state(java_on_flink):
    """StreamingImpulses on Flink, snapshotted (a savepoint) and cancelled; the same pipeline submitted again by Beam
    Java's runner with --createFromSnapshot starts from the snapshot: its PeriodicImpulse goes on from where the
    first job was (its position and pace are Flink state: the pace it was given again is not used), so it writes the
    windows between the snapshot and its own start, each whole, which a job started afresh never would."""
    java = java_on_flink
    first, second = java.base / "snap-1" / "imp", java.base / "snap-2" / "imp"
    done, job_id = java.dataflow("StreamingImpulses", first, V2, given_input=False)
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)
    try:
        wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=300)
        wait_for("two windows' files", lambda: len(window_files(first)) >= 2, START_S, (api, job_id))
        snapshot = api.client.post(f"{api.jobs_path}/{job_id}:snapshot", json={"ttl": "600s"})
        assert snapshot.status_code == 200 and snapshot.json()["state"] == "READY", snapshot.text
    finally:
        assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=120)
    time.sleep(4)  # two windows pass with no job running
    resubmitted_ms = time.time() * 1000
    done, new_id = java.dataflow(
        "StreamingImpulses",
        second,
        V2,
        f"--createFromSnapshot={snapshot.json()['id']}",
        "--intervalMillis=200",  # afresh, its impulses would be 200 ms apart: from the snapshot, the saved 100 ms
        given_input=False,
    )
    assert "SUBMITTED" in done.stdout, done.stdout
    try:
        assert api.get(new_id).json()["createdFromSnapshotId"] == snapshot.json()["id"]

        first_end = max(end for _, end in window_files(first))  # before the cancel, so before its resubmission

        def caught_up() -> dict | None:  # its windows from where the snapshot was (written in no set order)
            w = window_files(second)
            return w if any(start <= first_end for start, _ in w) else None

        # From the snapshot: the windows the first job had not written then, held in its state, come from the second
        # job, so no gap after the first job's last one; a fresh start would begin after the resubmission.
        windows = wait_for("the second job's windows from the snapshot's position", caught_up, START_S, (api, new_id))
        assert first_end < resubmitted_ms
        for (start, end), impulses in windows.items():
            assert impulses == list(range(start, end, 100)), (start, impulses)  # each window whole, each once
    finally:
        assert api.update(new_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, new_id, {"JOB_STATE_CANCELLED"}, timeout=120)


def test_a_java_job_on_flink_is_updated_with_its_state(java_on_flink):
    """StreamingImpulses on Flink replaced by Beam Java's runner with --update (the same job name) at another pace:
    the old job ends UPDATED, replaced by the new one, which goes on from the old one's state: its PeriodicImpulse's
    position and pace (100 ms) are state, so every window it writes holds 20 impulses, each once, where a job
    started afresh at the pace it was given (200 ms) would write 10."""
    java = java_on_flink
    old_out, new_out = java.base / "update-1" / "imp", java.base / "update-2" / "imp"
    name = f"impulses-update-{uuid.uuid4().hex[:8]}"
    done, old_id = java.dataflow("StreamingImpulses", old_out, V2, given_input=False, name=name)
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)
    new_id = None
    try:
        wait_state(api, old_id, {"JOB_STATE_RUNNING"}, timeout=300)
        wait_for("two windows' files", lambda: len(window_files(old_out)) >= 2, START_S, (api, old_id))
        done, new_id = java.dataflow(
            "StreamingImpulses", new_out, V2, "--update", "--intervalMillis=200", given_input=False, name=name
        )
        assert "SUBMITTED" in done.stdout, done.stdout
        assert new_id != old_id
        old = wait_state(api, old_id, {"JOB_STATE_UPDATED"}, timeout=300)
        assert old["replacedByJobId"] == new_id
        updated_ms = time.time() * 1000

        def caught_up() -> dict | None:
            w = window_files(new_out)
            return w if len(w) >= 3 and max(end for _, end in w) > updated_ms else None

        windows = wait_for("the new job's windows", caught_up, START_S, (api, new_id))
        for (start, end), impulses in windows.items():
            assert impulses == list(range(start, end, 100)), (start, impulses)
    finally:
        # (The new job may still be PENDING: its windows' files can come before its RUNNING.)
        for job_id in (old_id, new_id):
            if job_id and api.get(job_id).json()["currentState"] in ("JOB_STATE_PENDING", "JOB_STATE_RUNNING"):
                api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"})


def test_a_streaming_java_pipeline_reads_and_writes_pubsub_on_flink(java_with_emulators):  # noqa: F811
    """PubsubEcho on Flink, as tests/test_java_emulators.py runs it on Prism: its native Pub/Sub read and write
    replaced by Beamport's Python ones, beside the Java harness the pool starts."""
    pubsub_echo(java_with_emulators, V2, "flink")
