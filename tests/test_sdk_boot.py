"""Beamport's boot program for the SDK workers of Flink and Prism (beamport/engine/sdk_boot.py)."""

import os
import subprocess
import sys

from beamport.engine.sdk_boot import SANDBOXED, fetch_artifacts


def test_a_worker_loads_no_staged_file_of_an_earlier_worker_of_its_name(tmp_path):
    """A Flink SDK pool restarted over the same directory numbers its workers from 1 again: a job without a main
    session of its own once loaded the one an earlier worker of the same name had fetched (and failed on its
    imports). The staged directory is the worker's job's alone."""
    from apache_beam.portability.api import beam_provision_api_pb2

    stale = tmp_path / "staged" / "pickled_main_session"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier job's main session")
    assert fetch_artifacts(beam_provision_api_pb2.ProvisionInfo(), "", str(tmp_path)) == []
    assert not stale.exists()


def test_launchers_read_fn_api_runners_endpoints_without_beams_protos():
    """The Java and Go launchers read FnApiRunner's endpoint variables without importing apache_beam (2.5 s before
    the harness starts): what they read is the url Beam's text format wrote, and importing them loads no Beam."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import text_format

    from beamport.engine.harness_process import descriptor_url

    for url in ("localhost:37581", "127.0.0.1:5", "[::1]:9", "unix:///tmp/a b/sock"):
        assert descriptor_url(text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))) == url
    assert descriptor_url("") == ""
    loaded = "import sys, beamport.engine.java_boot, beamport.engine.go_boot; print('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True).stdout.strip() == "False"


def test_a_drain_truncates_the_unbounded_splittable_dofns_a_harness_hands_back(tmp_path):
    """Between a harness and its runner (a Java job's on Flink or Prism), the launcher's control relay drops the
    residuals of unbounded splittable DoFns once the job's drain file is there, as Dataflow truncates an unbounded
    restriction on drain; a bounded one's residuals (the rest of a file) still reach the runner."""
    import queue
    from concurrent import futures

    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, beam_runner_api_pb2

    from beamport.engine.harness_process import Drain, relay_control

    process = common_urns.sdf_components.PROCESS_SIZED_ELEMENTS_AND_RESTRICTIONS.urn
    descriptor = beam_fn_api_pb2.ProcessBundleDescriptor(id="stage-1")
    for name, bounded in (
        ("ticks", beam_runner_api_pb2.IsBounded.UNBOUNDED),
        ("file", beam_runner_api_pb2.IsBounded.BOUNDED),
    ):
        descriptor.transforms[name].spec.urn = process
        descriptor.transforms[name].outputs["out"] = f"{name}-out"
        descriptor.pcollections[f"{name}-out"].is_bounded = bounded
    to_harness: queue.SimpleQueue = queue.SimpleQueue()
    heard: queue.SimpleQueue = queue.SimpleQueue()  # what the runner hears back

    class Runner(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def Control(self, request_iterator, context):
            def listen():
                for response in request_iterator:
                    heard.put(response)

            futures.ThreadPoolExecutor(1).submit(listen)
            return iter(to_harness.get, None)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Runner(), server)
    runner = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    drain_file = tmp_path / "drain"
    relay = relay_control(runner, None, Drain(str(drain_file)))

    def bundle(instruction: str) -> list[str]:
        """The transforms whose residuals the runner gets back from a bundle that left both DoFns a remainder."""
        response = beam_fn_api_pb2.InstructionResponse(instruction_id=instruction)
        for name in ("ticks", "file"):
            response.process_bundle.residual_roots.add().application.transform_id = name
        responses.put(response)
        return [r.application.transform_id for r in heard.get(timeout=30).process_bundle.residual_roots]

    responses: queue.SimpleQueue = queue.SimpleQueue()
    with grpc.insecure_channel(relay) as channel:
        requests = beam_fn_api_pb2_grpc.BeamFnControlStub(channel).Control(iter(responses.get, None))
        register = beam_fn_api_pb2.InstructionRequest(instruction_id="register")
        register.register.process_bundle_descriptor.append(descriptor)  # the runner registers it on the stream
        to_harness.put(register)
        assert next(requests).instruction_id == "register"
        assert bundle("1") == ["ticks", "file"]  # no drain yet: the runner gets both back
        drain_file.touch()
        assert bundle("2") == ["file"]  # drained: the unbounded one's remainder is gone, the file's is read on
        responses.put(None)
        to_harness.put(None)
    server.stop(0)


# A Java worker's launcher run as the Flink pool runs it, saying at exit whether Beam's SDK was imported.
_LAUNCH = (
    "import atexit, runpy, sys\n"
    "from beamport.engine import beam_protos\n"
    "atexit.register(lambda: print('SDK imported:', beam_protos.sdk_imported()))\n"
    "runpy.run_module('beamport.engine.sdk_boot', run_name='__main__', alter_sys=True)\n"
)

# A "JVM" that is a harness: it connects to the control service it is given, answers the runner's instructions, and
# reports a user counter and a remainder of the unbounded splittable DoFn "ticks" from its bundle.
_HARNESS = """#!{python}
import os, queue, re
import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
url = re.search(r'url: "([^"]*)"', os.environ["CONTROL_API_SERVICE_DESCRIPTOR"]).group(1)
responses = queue.SimpleQueue()
with grpc.insecure_channel(url) as channel:
    for request in beam_fn_api_pb2_grpc.BeamFnControlStub(channel).Control(iter(responses.get, None)):
        response = beam_fn_api_pb2.InstructionResponse(instruction_id=request.instruction_id)
        if request.HasField("process_bundle"):
            info = response.process_bundle.monitoring_infos.add(urn="beam:metric:user:sum_int64:v1")
            info.labels.update(PTRANSFORM="count", NAMESPACE="ns", NAME="words")
            response.process_bundle.residual_roots.add().application.transform_id = "ticks"
        responses.put(response)
    responses.put(None)  # the runner ended the stream: so does the harness, as Beam's do
"""


def launch_java_worker(tmp_path, java: str, options: dict, answered: int) -> tuple[subprocess.CompletedProcess, list]:
    """Run the pool's launcher of a Java worker whose `java` is this script, with these provisioned options, against
    a runner that registers a bundle descriptor (the unbounded splittable DoFn "ticks") and then asks for a bundle;
    the `answered` answers it gets."""
    import queue
    from concurrent import futures

    import grpc
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import (
        beam_artifact_api_pb2_grpc,
        beam_fn_api_pb2,
        beam_fn_api_pb2_grpc,
        beam_provision_api_pb2,
        beam_provision_api_pb2_grpc,
        beam_runner_api_pb2,
    )
    from apache_beam.runners.portability import artifact_service
    from google.protobuf import struct_pb2

    jar = tmp_path / "build" / "pipeline-1.0.jar"
    jar.parent.mkdir()
    jar.write_bytes(b"PK the job's classes" * 1000)
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_text(java)
    (java_home / "bin" / "java").chmod(0o755)
    register = beam_fn_api_pb2.InstructionRequest(instruction_id="register")
    descriptor = register.register.process_bundle_descriptor.add(id="stage-1")
    descriptor.transforms["ticks"].spec.urn = common_urns.sdf_components.PROCESS_SIZED_ELEMENTS_AND_RESTRICTIONS.urn
    descriptor.transforms["ticks"].outputs["out"] = "ticks-out"
    descriptor.pcollections["ticks-out"].is_bounded = beam_runner_api_pb2.IsBounded.UNBOUNDED
    bundle = beam_fn_api_pb2.InstructionRequest(instruction_id="bundle")
    bundle.process_bundle.process_bundle_descriptor_id = "stage-1"
    answers: queue.SimpleQueue = queue.SimpleQueue()

    class Runner(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def Control(self, request_iterator, context):
            for request in (register, bundle):
                yield request
                answer = next(request_iterator, None)
                answers.put(answer)
                if answer is None or answer.error:
                    return

    server = grpc.server(futures.ThreadPoolExecutor(8))
    endpoint = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    provided = struct_pb2.Struct()
    provided.update(options)
    dependency = beam_runner_api_pb2.ArtifactInformation(
        type_urn=common_urns.artifact_types.FILE.urn,
        type_payload=beam_runner_api_pb2.ArtifactFilePayload(path=str(jar)).SerializeToString(),
        role_urn=common_urns.artifact_roles.STAGING_TO.urn,
        role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(staged_name="job.jar").SerializeToString(),
    )
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=provided, dependencies=[dependency])
    info.control_endpoint.url = info.logging_endpoint.url = info.artifact_endpoint.url = endpoint

    class Provisioning(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
        def GetProvisionInfo(self, request, context):
            return beam_provision_api_pb2.GetProvisionInfoResponse(info=info)

    beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Runner(), server)
    beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(Provisioning(), server)
    beam_artifact_api_pb2_grpc.add_ArtifactRetrievalServiceServicer_to_server(
        artifact_service.ArtifactRetrievalService(lambda path: open(path, "rb")), server
    )
    server.start()
    try:
        flags = ["--sdk=java", "--id='worker-1'", f"--provision_endpoint={endpoint}", f"--semi_persist_dir={tmp_path}"]
        env = {**os.environ, "JAVA_HOME": str(java_home), SANDBOXED: "1", "BEAMPORT_SANDBOX": ""}
        launcher = subprocess.run(
            [sys.executable, "-c", _LAUNCH, *flags, "--java_harness_jars=/opt/harness.jar"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        got = [answers.get(timeout=30) for _ in range(answered)]
    finally:
        server.stop(0)
    staged = tmp_path / "worker-worker-1" / "staged" / "job.jar"
    assert staged.read_bytes() == jar.read_bytes()  # fetched under its staged name, onto the class path
    class_path = (tmp_path / "worker-worker-1" / "class-path.args").read_text()
    assert "/opt/harness.jar" in class_path and str(staged) in class_path
    assert launcher.stderr.strip().endswith("SDK imported: False"), launcher.stderr  # its stdout is its stderr
    assert answers.empty()
    return launcher, got


def test_a_java_workers_launcher_relays_its_harness_with_beams_protos_alone(tmp_path):
    """A Java (or Go) worker's launcher, on Flink's pool and under Prism, provisions the worker, fetches its
    artifacts and relays its streams with Beam's protos alone: importing Beam's SDK cost every Java and Go harness's
    start 2 s. Here the pool's launcher of a Java worker of a draining job whose user metrics' keys are noted (a
    Flink job's): its harness's counter is noted, its source's remainder dropped, and Beam's SDK never imported."""
    keys = tmp_path / "metric-keys"
    (tmp_path / "drain").touch()
    options = {"beamport_drain_file": str(tmp_path / "drain"), "beamport_metric_keys_file": str(keys)}
    launcher, answers = launch_java_worker(tmp_path, _HARNESS.format(python=sys.executable), options, 2)
    assert launcher.returncode == 0, launcher.stderr
    assert [answer.instruction_id for answer in answers] == ["register", "bundle"]
    assert not answers[1].process_bundle.residual_roots  # drained: the unbounded remainder is gone
    assert len(answers[1].process_bundle.monitoring_infos) == 1
    assert keys.read_text().splitlines() == ['["count", "ns", "words", "beam:metric:user:sum_int64:v1"]']


def test_a_java_workers_launcher_answers_for_a_failed_harness_with_beams_protos_alone(tmp_path):
    """... and, when the JVM fails at once, answers the runner in its place saying why, with Beam's protos alone."""
    failing = "#!/bin/sh\necho 'Error: no harness in this JVM'\nexit 3\n"
    launcher, answers = launch_java_worker(tmp_path, failing, {}, 1)
    assert launcher.returncode == 3, launcher.stderr
    assert [answer.instruction_id for answer in answers] == ["register"]
    assert "The Java SDK harness (a JVM) exited with status 3" in answers[0].error
    assert "Error: no harness in this JVM" in answers[0].error


def test_the_launchers_know_beams_user_metrics():
    """The launchers note user metrics' keys by Beam's own list of their URNs, without importing its module."""
    from apache_beam.metrics import monitoring_infos

    from beamport.engine.metric_keys import user_metric_urns

    assert user_metric_urns() == monitoring_infos.USER_METRIC_URNS
