"""Beam Java pipelines submitted by Beam Java's own DataflowRunner (runner v1 and v2) run on the embedded engine, in
a Java SDK harness: outputs identical to Beam Java's DirectRunner's, the user counter through the Java runner's
MetricResults and getMetrics, a failing DoFn's Java stack trace in the job's messages, a cancel that leaves no
JVM, and classic templates the Java runner writes (--templateLocation) launched with parameters through
google-api-python-client. The pipelines are tests/java's, built once by scripts/java-pipelines
(BEAMPORT_TEST_JAVA: their class path)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import Api, Server, beamport_command, discovery_client, required_path
from test_auth import DEVELOPER, Admin, bearer
from test_running_jobs import wait_state
from test_streaming import START_S, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("java")]

V1, V2 = "v1", "v2"
WORDS = ["apple", "banana", "cherry", "avocado", "blueberry", "coconut", "date", "elderberry", "fig", "grape"]
TEXT = "\n".join(" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(i % 6 + 1)) for i in range(400)) + "\n"
PROJECT = "java-demo"
OTHER_TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps, the fox runs\n" * 5
# TemplatedWordCount's metadata file, as Google's Java templates ship one beside the template (<template>_metadata).
TEMPLATE_METADATA = {
    "name": "Templated WordCount",
    "description": "Counts the words of a text file.",
    "parameters": [
        {"name": "inputFile", "label": "Input", "helpText": "The text to count.", "paramType": "GCS_READ_FILE"},
        {"name": "output", "label": "Output prefix", "helpText": "Where the counts go.", "paramType": "GCS_WRITE_FILE"},
    ],
}


class Java:
    """Runs tests/java's pipelines: on Beam Java's DirectRunner, or submitted to a Beamport server."""

    def __init__(self, class_path: str, server: Server, base: Path):
        self.class_path = class_path
        self.server = server
        self.base = base
        self.input = base / "input.txt"
        self.input.write_text(TEXT)
        # One staging location for every job: the Java runner uploads each jar once (it skips those present).
        self.staging = base / "staging"

    def run(self, main: str, *args: str, timeout: float = 600, given_input: bool = True) -> subprocess.CompletedProcess:
        """Run a pipeline's main; given_input=False: without --inputFile (a template's, given at launch)."""
        input_flags = [f"--inputFile={self.input}"] if given_input else []
        # The submitting JVM lives seconds: C1 alone compiles what it runs, at half the CPU (WordCount's submission
        # 18 -> 13 CPU-s, its DirectRunner run 15 -> 7) on a machine the server's jobs share. The job's harness JVM
        # is the server's to start, as Beam's boot does.
        done = subprocess.run(
            [
                "java",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                self.class_path,
                f"dev.beamport.pipelines.{main}",
                *input_flags,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{main} {args}:\n{done.stdout[-5000:]}\n{done.stderr[-20000:]}"
        return done

    def direct(self, main: str, output: Path, *args: str) -> subprocess.CompletedProcess:
        return self.run(main, "--runner=DirectRunner", f"--output={output}", *args)

    def dataflow(
        self, main: str, output: Path | str, path: str, *args: str, given_input: bool = True, name: str = ""
    ) -> tuple[subprocess.CompletedProcess, str]:
        """Submit to the server with the flags of issue 18; the run's output and the (newest) job's id
        (given_input=False: the input is among `args`; name: the job's, else a new one)."""
        name = name or f"{main.lower()}-{path}-{uuid.uuid4().hex[:8]}"
        done = self.run(main, *self._dataflow_flags(name, path), f"--output={output}", *args, given_input=given_input)
        api = Api(self.server.url, PROJECT)
        job = max((j for j in api.all_jobs() if j["name"] == name), key=lambda j: j["createTime"])
        return done, job["id"]

    def template(self, main: str, location: Path, path: str) -> subprocess.CompletedProcess:
        """Write a classic template with Beam Java's DataflowRunner (--templateLocation): no job is created; its
        input and output are left to the launch."""
        name = f"{main.lower()}-{path}-template"
        return self.run(main, *self._dataflow_flags(name, path), f"--templateLocation={location}", given_input=False)

    def _dataflow_flags(self, name: str, path: str) -> list[str]:
        return [
            "--runner=DataflowRunner",
            f"--dataflowEndpoint={self.server.url}",
            f"--project={PROJECT}",
            "--region=us-central1",
            f"--jobName={name}",
            f"--tempLocation={self.base / 'temp'}",
            f"--stagingLocation={self.staging}",
            "--pathValidatorClass=org.apache.beam.sdk.extensions.gcp.storage.NoopPathValidator",
            "--credentialFactoryClass=org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory",
            *(["--experiments=use_runner_v2"] if path == V2 else []),
        ]


@pytest.fixture(scope="module")
def java(tmp_path_factory) -> Java:
    class_path = required_path("BEAMPORT_TEST_JAVA", "builds the Java pipelines (scripts/java-pipelines)")
    base = tmp_path_factory.mktemp("java")
    # One worker: each Java job after the first finds the JVM it keeps warm (engine/java_warm.py), as a developer's
    # second run does.
    srv = Server(base / "data", extra_args=("--allow-path", str(base), "--workers", "1")).start()
    yield Java(class_path.read_text().strip(), srv, base)
    srv.stop()


@pytest.fixture(scope="module")
def direct_outputs(java) -> dict:
    """Each pipeline's output (and printed lines) on Beam Java's DirectRunner, once."""
    outputs = {}
    for main in ("WordCount", "Features"):
        out = java.base / "direct" / main / "out"
        done = java.direct(main, out)
        outputs[main] = (read_output(out), done.stdout)
    return outputs


@pytest.fixture(scope="module")
def java_templates(java):
    """TemplatedWordCount written as a classic template by Beam Java's DataflowRunner (runner v1 or v2), once each,
    with Google's metadata file beside it."""
    written: dict[str, Path] = {}

    def template(path: str) -> Path:
        if path not in written:
            location = java.base / "templates" / path / "wordcount"
            location.parent.mkdir(parents=True)
            done = java.template("TemplatedWordCount", location, path)
            assert "TEMPLATE_WRITTEN" in done.stdout, done.stdout + done.stderr[-5000:]
            Path(f"{location}_metadata").write_text(json.dumps(TEMPLATE_METADATA))
            written[path] = location
        return written[path]

    return template


@pytest.fixture(scope="module")
def other_input(java) -> tuple[Path, list[str]]:
    """A second input, and TemplatedWordCount's output for it on Beam Java's DirectRunner (its ValueProviders given
    at construction, as flags)."""
    other = java.base / "other.txt"
    other.write_text(OTHER_TEXT)
    out = java.base / "direct" / "TemplatedWordCount" / "out"
    java.run(
        "TemplatedWordCount", "--runner=DirectRunner", f"--inputFile={other}", f"--output={out}", given_input=False
    )
    return other, read_output(out)


def read_output(prefix: Path) -> list[str]:
    return sorted(line for f in prefix.parent.glob(prefix.name + "*") for line in f.read_text().splitlines())


def messages(api: Api, job_id: str) -> list[str]:
    answer = api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000).json()
    return [m.get("messageText", "") for m in answer.get("jobMessages", [])]


def harness_said(api: Api, job_id: str, line: str, within: float = 60) -> str:
    """The job's messages once they hold `line`, logged by its SDK harness: a harness's log stream reaches them
    a little after the work it tells of. All of the job's messages, every page."""

    def said() -> str:
        texts, token = [], None
        while True:
            paged = {"pageToken": token} if token else {}
            answer = api.messages(job_id, minimumImportance="JOB_MESSAGE_DEBUG", pageSize=1000, **paged).json()
            texts += [m.get("messageText", "") for m in answer.get("jobMessages", [])]
            if not (token := answer.get("nextPageToken")):
                return "\n".join(texts)

    deadline = time.monotonic() + within
    while line not in (text := said()) and time.monotonic() < deadline:
        time.sleep(1)
    assert line in text, text[-5000:]
    return text


@pytest.mark.parametrize("path", [V1, V2])
def test_wordcount_output_is_the_direct_runners(java, direct_outputs, path):
    out = java.base / path / "wordcount" / "out"
    done, job_id = java.dataflow("WordCount", out, path)
    assert "FINAL_STATE DONE" in done.stdout, done.stdout + done.stderr[-5000:]
    assert read_output(out) == direct_outputs["WordCount"][0] != []
    job = Api(java.server.url, PROJECT).get(job_id, view="JOB_VIEW_ALL").json()
    assert job["currentState"] == "JOB_STATE_DONE"
    assert job["type"] == "JOB_TYPE_BATCH"
    # Its graph as Dataflow describes it, on both paths (runner v1 sends legacy steps, kept as sent): the staged
    # pipeline's transforms by name and kind, and the stages they ran in.
    described = job["pipelineDescription"]
    kinds = {t["name"]: t.get("kind") for t in described["originalPipelineTransform"]}
    assert {name.split("/")[0] for name in kinds} >= {"ReadLines", "WordCount.CountWords", "WriteCounts"}, kinds
    assert kinds["WordCount.CountWords/CountWords/Combine.perKey(Count)/GroupByKey"] == "GROUP_BY_KEY_KIND"
    assert described["executionPipelineStage"], described
    if path == V1:
        assert job["steps"][0]["name"] == "s1"  # the legacy steps as Beam Java's runner v1 sent them


@pytest.mark.parametrize("path", [V1, V2])
def test_counter_side_input_and_group_by_key(java, direct_outputs, path):
    out = java.base / path / "features" / "out"
    done, job_id = java.dataflow("Features", out, path)
    assert "FINAL_STATE DONE" in done.stdout, done.stdout + done.stderr[-5000:]
    assert read_output(out) == direct_outputs["Features"][0] != []
    # The counter as the Java runner's MetricResults read it back from getMetrics, and as the DirectRunner counts.
    words = len(TEXT.split())
    assert re.search(rf"COUNTER words attempted={words}\b", direct_outputs["Features"][1])
    assert re.search(rf"COUNTER words attempted={words}\b", done.stdout), done.stdout
    api = Api(java.server.url, PROJECT)
    metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json()["metrics"]
    user = [m for m in metrics if m["name"]["name"] == "words" and m["name"].get("origin") == "user"]
    assert user and {m["scalar"] for m in user} == {words}, metrics


@pytest.mark.parametrize("path", [V1, V2])
def test_a_java_classic_template_launched_through_google_api_python_client_with_parameters(
    java, direct_outputs, java_templates, other_input, path
):
    template = java_templates(path)
    api = Api(java.server.url, PROJECT)
    assert not [j for j in api.all_jobs() if j["name"].endswith("-template")]  # writing one creates no job
    templates = discovery_client(java.server.url).projects().locations().templates()
    described = templates.get(projectId=PROJECT, location="us-central1", gcsPath=str(template)).execute()
    assert described["templateType"] == "LEGACY" and described["metadata"] == TEMPLATE_METADATA

    other, other_output = other_input
    runs = [(java.input, direct_outputs["WordCount"][0]), (other, other_output)]
    assert runs[0][1] != runs[1][1] and [] not in (runs[0][1], runs[1][1])
    if path == V1:  # (two launches with their own parameters: runner v2's template shows that, as v1's would)
        runs = runs[1:]
    launched = []
    for i, (input_file, expected) in enumerate(runs):
        out = java.base / path / f"templated-{i}" / "out"
        name = f"templated-{path}-{i}"
        body = {"jobName": name, "parameters": {"inputFile": str(input_file), "output": str(out)}}
        job = templates.launch(projectId=PROJECT, location="us-central1", gcsPath=str(template), body=body).execute()
        assert job["job"]["name"] == name
        launched.append((job["job"]["id"], name, input_file, out, expected))
    for job_id, name, input_file, out, expected in launched:
        done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}, timeout=300)
        assert done["currentState"] == "JOB_STATE_DONE", "\n".join(messages(api, job_id))[-5000:]
        assert read_output(out) == expected
        # The job's options are the Java pipeline's, named as Beam Java names them, with the launch's values.
        options = api.get(job_id, view="JOB_VIEW_ALL").json()["environment"]["sdkPipelineOptions"]["options"]
        assert options["jobName"] == name and "job_name" not in options and "templateLocation" not in options
        assert (options["inputFile"], options["output"]) == (str(input_file), str(out))


@pytest.fixture(scope="module")
def java_flex_spec(java) -> Path:
    """WordCount as a Java flex template: its spec written as gcloud's `flex-template build --jar ... --env
    FLEX_TEMPLATE_JAVA_MAIN_CLASS=...` writes one, over copies of its jars (where servers' file policies let them
    be read)."""
    lib = java.base / "flex" / "lib"
    lib.mkdir(parents=True)
    jars = []
    for jar in java.class_path.split(os.pathsep):
        jars.append(lib / f"{len(jars):03d}-{Path(jar).name}")
        shutil.copyfile(jar, jars[-1])
    metadata = java.base / "flex" / "metadata.json"
    metadata.write_text(json.dumps({**TEMPLATE_METADATA, "name": "Flex WordCount"}))
    spec = java.base / "flex" / "wordcount.json"
    main = "FLEX_TEMPLATE_JAVA_MAIN_CLASS=dev.beamport.pipelines.WordCount"
    jar_flags = [f"--jar={jar}" for jar in jars]
    beamport_command("templates", "build-flex", str(spec), *jar_flags, "--env", main, "--metadata-file", str(metadata))
    written = json.loads(spec.read_text())
    assert written["sdkInfo"] == {"language": "JAVA"} and written["metadata"]["name"] == "Flex WordCount"
    return spec


def flex_launch(spec: Path, name: str, input_file: Path, out: Path) -> dict:
    return {
        "launchParameter": {
            "jobName": name,
            "containerSpecGcsPath": str(spec),
            "parameters": {"inputFile": str(input_file), "output": str(out)},
            "environment": {"additionalUserLabels": {"team": "data"}},
        }
    }


def test_a_java_flex_template_launched_through_google_api_python_client(java, direct_outputs, java_flex_spec):
    """Launched, Beamport runs the template's main class over its jars (as Dataflow's Java launcher image does),
    which submits the job with Beam Java's DataflowRunner."""
    out = java.base / "flex" / "out"
    flex = discovery_client(java.server.url).projects().locations().flexTemplates()
    body = flex_launch(java_flex_spec, "flex-wordcount", java.input, out)
    job = flex.launch(projectId=PROJECT, location="us-central1", body=body).execute()["job"]
    assert job["name"] == "flex-wordcount"
    api = Api(java.server.url, PROJECT)
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}, timeout=300)
    assert done["currentState"] == "JOB_STATE_DONE", "\n".join(messages(api, job["id"]))[-5000:]
    assert read_output(out) == direct_outputs["WordCount"][0] != []
    # Submitted by the Java launcher with Java's option names, the environment's labels among them.
    assert done["labels"] == {"team": "data"}
    options = api.get(job["id"], view="JOB_VIEW_ALL").json()["environment"]["sdkPipelineOptions"]["options"]
    assert (options["jobName"], options["inputFile"]) == ("flex-wordcount", str(java.input))
    assert "Launched from a flex template" in "\n".join(messages(api, job["id"]))


def test_a_java_flex_template_launched_by_a_developer_runs_as_the_developer(java, direct_outputs, java_flex_spec):
    """With authentication on, the Java launcher submits with a short-lived key of the caller's account (Beam
    Java's default credentials read it, as Python's do), gone once the launcher exits."""
    base = java.base / "secured"
    srv = Server(base / "data", extra_args=("--allow-path", str(java.base), "--workers", "1"), auth=True).start()
    try:
        admin = Admin(srv)
        email, key = admin.account(PROJECT, "java-flexer", DEVELOPER, base)
        out = base / "out"
        launched = httpx.post(
            f"{srv.url}/v1b3/projects/{PROJECT}/locations/us-central1/flexTemplates:launch",
            json=flex_launch(java_flex_spec, "flex-secured", java.input, out),
            headers=bearer(key),
            timeout=300,
        )
        assert launched.status_code == 200, launched.text
        job_path = f"/v1b3/projects/{PROJECT}/locations/us-central1/jobs/{launched.json()['job']['id']}"
        deadline = time.monotonic() + 300
        while (state := admin.ok("GET", job_path)["currentState"]) not in ("JOB_STATE_DONE", "JOB_STATE_FAILED"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state == "JOB_STATE_DONE"
        assert read_output(out) == direct_outputs["WordCount"][0]
        creates = [e for e in admin.audit(PROJECT) if e["protoPayload"]["methodName"] == "dataflow.jobs.create"]
        assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in creates} == {email}
        deadline = time.monotonic() + 60
        while len(admin.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys")["keys"]) > 1:
            assert time.monotonic() < deadline, "the launcher's temporary key was not deleted"
            time.sleep(0.2)
    finally:
        srv.stop()


def test_a_java_templates_bad_parameters_are_refused_as_a_python_templates_are(java, java_templates):
    template = java_templates(V1)
    api = Api(java.server.url, PROJECT)
    path = f"/v1b3/projects/{PROJECT}/locations/us-central1/templates:launch"
    good = {"inputFile": str(java.input), "output": str(java.base / "refused" / "out")}

    def refused(gcs_path: Path, parameters: dict) -> str:
        response = api.client.post(
            path, params={"gcsPath": str(gcs_path)}, json={"jobName": "refused", "parameters": parameters}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
        return response.json()["error"]["message"]

    assert "'colour' is not a parameter" in refused(template, {**good, "colour": "red"})
    assert "'output' is required" in refused(template, {"inputFile": good["inputFile"]})
    # Without its metadata file the template describes its runtime parameters itself (its ValueProvider options),
    # and a parameter must still be one of its pipeline's options.
    bare = template.parent / "bare"
    shutil.copyfile(template, bare)
    templates = discovery_client(java.server.url).projects().locations().templates()
    described = templates.get(projectId=PROJECT, location="us-central1", gcsPath=str(bare)).execute()
    assert described["templateType"] == "LEGACY"
    assert [p["name"] for p in described["metadata"]["parameters"]] == ["inputFile", "output"]
    assert "'colour' is not a parameter" in refused(bare, {**good, "colour": "red"})
    assert not [j for j in api.all_jobs() if j["name"] == "refused"]


def test_a_failing_dofn_fails_the_job_with_its_java_stack_trace(java):
    out = java.base / "failing" / "out"
    done, job_id = java.dataflow("Features", out, V1, "--failOn=fig")
    assert "FINAL_STATE FAILED" in done.stdout, done.stdout + done.stderr[-5000:]
    api = Api(java.server.url, PROJECT)
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_FAILED"
    text = "\n".join(messages(api, job_id))
    assert "java.lang.IllegalStateException: Features refuses the word fig" in text, text[-5000:]
    assert "at dev.beamport.pipelines.Features$SplitWords.processElement(Features.java:" in text, text[-5000:]


def test_a_second_java_job_runs_in_the_jvm_its_worker_kept_warm(java, direct_outputs):
    """After a Java job, the worker's standby executor starts a JVM over the jars it ran with, warmed up (Beam's
    harness loaded, its options registry built): the next job over the same jars takes it, with the same output."""
    api = Api(java.server.url, PROJECT)
    # (In the whole module, a test before it ran a job over these jars already, and a JVM waits: one job is enough.)
    for run in ("second",) if waiting_warm_jvms(java.server) else ("first", "second"):
        out = java.base / "warm" / run / "out"
        done, job_id = java.dataflow("WordCount", out, V2)
        assert "FINAL_STATE DONE" in done.stdout, done.stdout + done.stderr[-5000:]
        assert read_output(out) == direct_outputs["WordCount"][0] != []
    text = "\n".join(messages(api, job_id))
    assert "The Java SDK harness ran in a JVM this worker started ahead of the job" in text, text[-5000:]
    # Its jars, by content, where no job may write.
    assert any(Path.home().joinpath(".cache/beamport/java/warm").glob("*.jar"))


def test_a_jvm_that_dies_before_it_reaches_the_runner_fails_the_job_saying_why(java):
    """Staged without Beam's harness jar (--filesToStage, as a fat jar gone wrong), the JVM cannot start the
    harness and exits: the job fails with the JVM's own words, rather than wait for a harness that never comes."""
    staged = [jar for jar in java.class_path.split(os.pathsep) if "beam-sdks-java-harness" not in jar]
    out = java.base / "no-harness" / "out"
    done, job_id = java.dataflow("WordCount", out, V2, f"--filesToStage={','.join(staged)}")
    assert "FINAL_STATE FAILED" in done.stdout, done.stdout + done.stderr[-5000:]
    text = "\n".join(messages(Api(java.server.url, PROJECT), job_id))
    assert "The Java SDK harness (a JVM) exited with status 1 before it reached the runner" in text, text[-5000:]
    assert "org.apache.beam.fn.harness.FnHarness" in text, text[-5000:]  # Java's "could not find or load"
    assert not harness_jvms(java.server)


def harness_jvms(server: Server) -> list[psutil.Process]:
    """The JVMs running a job's Java SDK harness: one started for it, or a warm one its launcher took (one still
    waiting for a job, beside an executor with no launcher, runs none)."""
    assert server.process is not None
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            command = process.cmdline()
            if "org.apache.beam.fn.harness.FnHarness" in command:
                found.append(process)
            elif is_warm_jvm(command) and _launched(process.parent()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def waiting_warm_jvms(server: Server) -> list[psutil.Process]:
    """The warm JVMs (engine/java_warm.py) that wait for a job under the server's workers."""
    assert server.process is not None
    found = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if is_warm_jvm(process.cmdline()) and not _launched(process.parent()):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def is_warm_jvm(command: list[str]) -> bool:
    """A warm JVM's command: its main class WarmHarness, compiled (java_warm.compiled) or as its source file."""
    return any(part == "WarmHarness" or part.endswith("WarmHarness.java") for part in command)


def _launched(executor: psutil.Process) -> bool:
    """Whether a java_boot launcher runs under this executor (which a warm JVM waits in)."""
    return any("beamport.engine.java_boot" in p.cmdline() for p in executor.children(recursive=True))


def test_cancel_leaves_no_jvm(java):
    out = java.base / "cancelled" / "out"
    done, job_id = java.dataflow("Features", out, V2, "--slowMillis=2000", "--wait=false")
    assert "SUBMITTED" in done.stdout
    api = Api(java.server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=300)
    deadline = time.monotonic() + 300
    while not (jvms := harness_jvms(java.server)):
        assert time.monotonic() < deadline, "no Java SDK harness started"
        assert api.get(job_id).json()["currentState"] == "JOB_STATE_RUNNING"
        time.sleep(0.2)
    groups = {os.getpgid(jvm.pid) for jvm in jvms}
    response = api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"})
    assert response.status_code == 200, response.text
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=300)
    # The JVMs, and everything else of the work item's process group, end with it.
    gone, alive = psutil.wait_procs(jvms, timeout=60)
    assert not alive, alive
    # The sandbox's own process (bwrap) goes once its child has: wait for that, not for a time.
    deadline = time.monotonic() + 60
    while left := [p for p in psutil.process_iter() if _alive_in(p, groups)]:
        assert time.monotonic() < deadline, left
        time.sleep(0.1)


@pytest.fixture(scope="module")
def java_on_prism(java, tmp_path_factory) -> Java:
    """A server with Prism, which runs streaming Java jobs; one worker, so that each Java job after the first finds
    the JVM it keeps warm."""
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    base = tmp_path_factory.mktemp("java-prism")
    srv = Server(base / "data", extra_args=("--allow-path", str(base), "--workers", "1", "--prism", str(prism))).start()
    java_on_prism = Java(java.class_path, srv, base)
    java_on_prism.jobs_run = 0  # type: ignore[attr-defined]
    yield java_on_prism
    srv.stop()


def window_files(prefix: Path) -> dict[tuple[int, int], list[int]]:
    """TextIO's windowed output: each window's (start, end) in milliseconds, and its lines as numbers."""
    found = {}
    for path in prefix.parent.glob(prefix.name + "*-pane-*"):
        bounds = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", path.name)
        start, end = (int(datetime.fromisoformat(b.replace("Z", "+00:00")).timestamp() * 1000) for b in bounds)
        found[(start, end)] = sorted(int(line) for line in path.read_text().split())
    return found


@pytest.mark.parametrize("path", [V1, V2])
def test_a_streaming_java_pipeline_runs_on_prism_until_cancelled_or_drained(java_on_prism, path):
    """StreamingImpulses (PeriodicImpulse -> FixedWindows -> TextIO's windowed writes), submitted by Beam Java's
    DataflowRunner with --streaming: it runs on Prism in a Java SDK harness, each window's file holds exactly that
    window's impulses, once, its counter is live in getMetrics, its harness's lines in the job's messages. Runner
    v1's job is cancelled, runner v2's drained (PeriodicImpulse truncated by the launcher's relay, as Prism has no
    drain of its own); either way no JVM is left. A job after the first (v2's, after v1's) runs its harness in the
    JVM the worker kept warm over the jars of the one before, as on the embedded engine."""
    java = java_on_prism
    out = java.base / f"impulses-{path}" / "imp"
    others = {jvm.pid for jvm in harness_jvms(java.server)}  # (another test's job, if it was left running)
    warm = java.jobs_run > 0  # type: ignore[attr-defined]
    java.jobs_run += 1  # type: ignore[attr-defined]
    done, job_id = java.dataflow("StreamingImpulses", out, path, given_input=False)
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)
    ended = False
    try:
        job = wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=300)
        assert job["type"] == "JOB_TYPE_STREAMING"

        windows = wait_for(
            "three windows' files", lambda: len(w := window_files(out)) >= 3 and w, START_S, (api, job_id)
        )
        for (start, end), impulses in windows.items():
            assert end - start == 2000
            assert impulses == list(range(start, end, 100)), (start, impulses)  # an impulse every 100 ms, each once

        impulses_counted(api, job_id, 20 * len(windows), within=60)
        said = harness_said(api, job_id, "Opening writer")  # TextIO's WriteFiles logging, in the harness
        ran_warm = "The Java SDK harness ran in a JVM this worker started ahead of the job" in said
        assert ran_warm == warm, said[-5000:]
        jvms = [jvm for jvm in harness_jvms(java.server) if jvm.pid not in others]
        assert jvms, "the job's Java SDK harness runs"
        if path == V2:
            drained_whole(api, job_id, out, jvms, timeout=120)
            ended = True
    finally:
        if not ended:
            assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    if not ended:
        cancelled_with_its_jvms(api, job_id, jvms, timeout=60)


def impulses_counted(api: Api, job_id: str, least: int, within: float) -> None:
    """Wait until the running StreamingImpulses job's user counter `impulses` is at least `least` in getMetrics."""

    def counted() -> int:
        metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
        counts = [m["scalar"] for m in metrics if m["name"]["name"] == "impulses" and m["name"].get("origin") == "user"]
        return max(counts, default=0)

    wait_for("the impulses counted in getMetrics", lambda: counted() >= least, within, (api, job_id))


def cancelled_with_its_jvms(api: Api, job_id: str, jvms: list[psutil.Process], timeout: float) -> None:
    """The cancelled job ends CANCELLED, and its Java SDK harnesses exit within `timeout`."""
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=120)
    gone, alive = psutil.wait_procs(jvms, timeout=timeout)
    assert not alive, alive


def drained_whole(api: Api, job_id: str, out: Path, jvms: list[psutil.Process], timeout: float) -> None:
    """Drain the running StreamingImpulses job: its PeriodicImpulse (Java's own splittable DoFn) reads no more, the
    open window fires with the impulses it had, and the job ends DRAINED with its harnesses. Every window's file holds
    its impulses once: all of them but the last window's, which holds those up to the drain."""
    answer = api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"})
    assert answer.status_code == 200, answer.text
    done = wait_state(api, job_id, {"JOB_STATE_DRAINED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}, timeout=timeout)
    assert done["currentState"] == "JOB_STATE_DRAINED", "\n".join(messages(api, job_id))[-5000:]
    *whole, (last_window, last) = sorted(window_files(out).items())
    for (start, end), impulses in whole:
        assert impulses == list(range(start, end, 100)), (start, impulses)
    start, end = last_window
    assert last and last == list(range(start, start + 100 * len(last), 100)), (start, last)
    gone, alive = psutil.wait_procs(jvms, timeout=60)
    assert not alive, alive


def _alive_in(process: psutil.Process, groups: set[int]) -> bool:
    """Whether a process runs in one of these process groups (a zombie, dead and waiting for its parent to
    read its exit, does not run)."""
    try:
        return os.getpgid(process.pid) in groups and process.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.NoSuchProcess):
        return False


def test_the_launcher_starts_the_harness_as_beams_java_boot_does(tmp_path):
    """java_boot with a stand-in `java` that prints what it was given: Beam Java boot's environment and flags."""
    import json
    import sys

    from beamport.engine import java_boot

    java = tmp_path / "java"
    java.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nenv\n')
    java.chmod(0o755)
    jars = [str(tmp_path / "a b.jar"), str(tmp_path / "c.jar")]
    with pytest.raises(java_boot.JavaUnavailable, match="jamm"):
        java_boot.harness_command(jars, [], tmp_path)
    command = java_boot.harness_command(jars, [str(tmp_path / "jamm.jar")], tmp_path)
    spec = json.loads((tmp_path / "java-harness.json").read_text())
    spec["java"] = str(java)
    (tmp_path / "java-harness.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "WORKER_ID": "worker_7",
        "PIPELINE_OPTIONS": '{"options": {"jobName": "j"}}',
        "CONTROL_API_SERVICE_DESCRIPTOR": 'url: "localhost:1"',
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(command, shell=True, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = done.stderr.splitlines()  # the harness's output goes to stderr, with the executor's
    assert "org.apache.beam.fn.harness.FnHarness" in printed
    assert "HARNESS_ID=worker_7" in printed and f"SEMI_PERSISTENT_DIRECTORY={tmp_path}" in printed
    options_file = next(line.split("=", 1)[1] for line in printed if line.startswith("PIPELINE_OPTIONS_FILE="))
    assert json.loads(Path(options_file).read_text()) == {"options": {"jobName": "j"}}
    argfile = next(line[1:] for line in printed if line.startswith("@"))
    assert Path(argfile).read_text() == f'-cp "{tmp_path}/jamm.jar:{tmp_path}/a b.jar:{tmp_path}/c.jar"\n'
    assert any(line.startswith("-Xmx") for line in printed) and "-XX:+UseParallelGC" in printed


def test_the_launcher_started_by_prism_asks_the_provisioning_service_as_beams_java_boot_does(tmp_path):
    """java_boot with Prism's flags (the container contract) and a stand-in `java`: the endpoints and options come
    from the runner's provisioning service, the quotes Prism puts around the id are gone."""
    import json
    import sys
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
    from google.protobuf import struct_pb2

    from beamport.engine import java_boot

    asked = []

    class Provision(beam_provision_api_pb2_grpc.ProvisionServiceServicer):
        def GetProvisionInfo(self, request, context):
            asked.append(dict(context.invocation_metadata()).get("worker_id"))
            options = struct_pb2.Struct()
            options.update({"beam:option:job_name:v1": "j"})
            return beam_provision_api_pb2.GetProvisionInfoResponse(
                info=beam_provision_api_pb2.ProvisionInfo(
                    pipeline_options=options,
                    control_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:11"),
                    logging_endpoint=endpoints_pb2.ApiServiceDescriptor(url="localhost:12"),
                )
            )

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    beam_provision_api_pb2_grpc.add_ProvisionServiceServicer_to_server(Provision(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        java = tmp_path / "java"
        java.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nenv\n')
        java.chmod(0o755)
        command = java_boot.harness_command([str(tmp_path / "c.jar")], [str(tmp_path / "jamm.jar")], tmp_path)
        spec = json.loads((tmp_path / "java-harness.json").read_text())
        (tmp_path / "java-harness.json").write_text(json.dumps({**spec, "java": str(java)}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        flags = f" --id=\\'w-1\\' --provision_endpoint=127.0.0.1:{port} --semi_persist_dir={tmp_path}"
        done = subprocess.run(command + flags, shell=True, capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.stop(0)
    assert done.returncode == 0, done.stderr
    assert asked == ["w-1"]
    printed = done.stderr.splitlines()
    assert "org.apache.beam.fn.harness.FnHarness" in printed and "HARNESS_ID=w-1" in printed
    assert 'CONTROL_API_SERVICE_DESCRIPTOR=url: "localhost:11"' in printed
    assert 'LOGGING_API_SERVICE_DESCRIPTOR=url: "localhost:12"' in printed
    options_file = next(line.split("=", 1)[1] for line in printed if line.startswith("PIPELINE_OPTIONS_FILE="))
    assert json.loads(Path(options_file).read_text()) == {"beam:option:job_name:v1": "j"}
