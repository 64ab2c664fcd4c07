"""Beamport's SDK worker pool (beamport/engine/worker_pool.py): the workers Flink's and Prism's tasks ask for."""

import queue
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest
from conftest import free_port

from beamport.engine import harness_process, portable, worker_pool


class Runner:
    """A runner's control service, as Flink's and Prism's are to their workers: each worker that connects gets
    one instruction; its answers are kept, with the worker id it connected as."""

    def __init__(self):
        from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

        self.answers: queue.SimpleQueue = queue.SimpleQueue()
        answers = self.answers

        class Control(beam_fn_api_pb2_grpc.BeamFnControlServicer):
            def Control(self, request_iterator, context):
                worker_id = dict(context.invocation_metadata()).get("worker_id")
                yield beam_fn_api_pb2.InstructionRequest(instruction_id="register")
                answer = next(request_iterator, None)
                answers.put((worker_id, answer))

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Control(), self.server)
        self.url = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def start_worker(self, pool_address: str, worker_id: str, sdk: str | None = None):
        from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2

        here = endpoints_pb2.ApiServiceDescriptor(url=self.url)
        with grpc.insecure_channel(pool_address) as channel:
            return beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
                beam_fn_api_pb2.StartWorkerRequest(
                    worker_id=worker_id,
                    control_endpoint=here,
                    logging_endpoint=here,
                    artifact_endpoint=here,
                    provision_endpoint=here,
                    params={portable.SDK_PARAM: sdk} if sdk else {},
                ),
                timeout=30,
            )

    def stop_worker(self, pool_address: str, worker_id: str) -> None:
        from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

        with grpc.insecure_channel(pool_address) as channel:
            stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
            stub.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id), timeout=30)


@pytest.fixture
def pool(tmp_path):
    """A pool whose workers run tmp_path/boot (a script each test writes), and a runner to ask it for workers."""
    boot = tmp_path / "boot"
    address, server = worker_pool.start(str(boot))
    runner = Runner()
    yield boot, address, runner
    server.stop(0)
    runner.server.stop(0)


def _boot(path, script: str) -> None:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_a_worker_that_ends_before_it_reaches_the_runner_fails_its_job_saying_why(pool):
    """A runner waits for the worker it asked for until the worker connects, for ever (Beam's Flink runner,
    Prism): a Python worker whose main session cannot be loaded, or whose boot failed, ended first and hung its job.
    The pool answers the runner's first instruction in its place, with its status and last lines."""
    boot, address, runner = pool
    _boot(boot, "echo 'Could not load main session: no module named mine' >&2\nexit 3")
    assert runner.start_worker(address, "worker-7").error == ""
    worker_id, answer = runner.answers.get(timeout=30)
    assert worker_id == "worker-7"
    assert answer.instruction_id == "register"
    assert "The Python SDK worker worker-7 exited with status 3 before it reached the runner" in answer.error
    assert "Could not load main session: no module named mine" in answer.error


def test_the_pool_adds_nothing_when_the_workers_launcher_answered_or_the_runner_stopped_it(pool):
    """A Java or Go worker's launcher answers for its failed harness itself (harness_process): the pool does not
    answer again; nor for a worker the runner stopped (its end was asked for)."""
    boot, address, runner = pool
    _boot(boot, f"echo 'the harness failed'\necho \"{harness_process.ANSWERED_LINE}\" >&2\nexit 3")
    assert runner.start_worker(address, "go-1", portable.GO_SDK).error == ""
    _boot(boot, "exec sleep 60")
    assert runner.start_worker(address, "python-1").error == ""
    time.sleep(1)
    runner.stop_worker(address, "python-1")
    time.sleep(3)  # (an answer comes within a second of a worker's end)
    assert runner.answers.empty(), runner.answers.get()


def test_a_worker_of_the_pool_keeps_its_output_in_the_pools_log(tmp_path):
    """The pool reads its workers' output (to see why one failed) and passes every line on to its own stderr,
    the pool's log (Flink's sdkpool.log), as before."""
    boot = tmp_path / "boot"
    _boot(boot, "echo 'a line of the worker'\necho 'another, on stderr' >&2\nexit 0")
    port = free_port()
    command = [sys.executable, "-m", "beamport.engine.worker_pool", f"--service_port={port}"]
    log = tmp_path / "pool.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([*command, f"--container_executable={boot}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        runner = Runner()
        try:
            assert runner.start_worker(f"localhost:{port}", "w-1").error == ""
            deadline = time.monotonic() + 30
            while "another, on stderr" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            runner.server.stop(0)
        said = log.read_text()
        assert "a line of the worker" in said and "another, on stderr" in said, said
    finally:
        process.kill()
        process.wait()
