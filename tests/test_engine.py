"""The engine layer: jobs submitted by Beam's DataflowRunner, staged from what the server stored, run on the
embedded engine, and compared with DirectRunner on the same input. Plus the file policy and staging rules."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from apache_beam import DoFn

from beamport.engine.base import DONE, FAILED, STAGE_DONE, STAGE_FAILED, STAGE_RUNNING
from beamport.engine.embedded import PROCESSES, THREADS, EmbeddedEngine, parallelism_for
from beamport.engine.staging import stage_job, unsatisfied_requirements
from beamport.errors import ApiError
from beamport.files import FilePolicy

one_backend = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

# Run as a script, so that its pipelines live in __main__ (as a user's do) and need save_main_session.
SUBMIT = textwrap.dedent(
    """
    import json
    import logging
    import sys

    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.transforms import window

    STOPWORDS = ["a", "and", "the"]  # a global the pipeline reads
    WINDOW_S = 60


    def normalise(word):  # a module-level helper the DoFn calls
        return word.strip(".,;!").lower()


    class Tokenise(beam.DoFn):
        def __init__(self):
            self.words = Metrics.counter("tokenise", "words")
            self.skipped = Metrics.counter("tokenise", "stopwords")
            self.lengths = Metrics.distribution("tokenise", "word_length")

        def process(self, line, stopwords):
            seconds, text = line.split("\\t", 1)
            for raw in text.split():
                word = normalise(raw)
                if word in stopwords:
                    self.skipped.inc()
                    continue
                if word == "alarm":
                    logging.warning("alarm word at second %s", seconds)
                self.words.inc()
                self.lengths.update(len(word))
                yield window.TimestampedValue((word, int(seconds)), int(seconds))


    def describe(joined, win=beam.DoFn.WindowParam):
        word, groups = joined
        Metrics.counter("describe", "rows").inc()
        return f"{int(win.start)} {word} count={sum(groups['count'])} seconds={sorted(groups['seconds'])}"


    def build_windowed(pipeline, source, output):
        stopwords = pipeline | "Stopwords" >> beam.Create(STOPWORDS)
        words = (
            pipeline
            | "Read" >> beam.io.ReadFromText(source)
            | "Tokenise" >> beam.ParDo(Tokenise(), stopwords=beam.pvalue.AsList(stopwords))
            | "Window" >> beam.WindowInto(window.FixedWindows(WINDOW_S))
        )
        counts = words | "Ones" >> beam.Map(lambda kv: (kv[0], 1)) | "Count" >> beam.CombinePerKey(sum)
        (
            {"count": counts, "seconds": words}
            | "Join" >> beam.CoGroupByKey()
            | "Describe" >> beam.Map(describe)
            | "Write" >> beam.io.WriteToText(output, num_shards=1)
        )


    def explode(line):
        raise ValueError("boom")


    def build_failing(pipeline, source, output):
        pipeline | "Read" >> beam.io.ReadFromText(source) | "Explode" >> beam.Map(explode)


    def metric_rows(results):
        rows = []
        for kind in ("counters", "distributions"):
            for r in results[kind]:
                c = r.committed
                value = c if kind == "counters" else [c.sum, c.count, c.min, c.max]
                rows.append([kind, r.key.step, r.key.metric.namespace, r.key.metric.name, value])
        return sorted(rows)


    def submit_options(endpoint, project, work, name):
        staging = f"{work}/staging-{name}"
        return [
            "--runner=DataflowRunner", f"--dataflow_endpoint={endpoint}", "--no_auth", f"--project={project}",
            "--region=us-central1", f"--temp_location={staging}", f"--staging_location={staging}",
            f"--job_name={name}", "--save_main_session",
        ]


    if __name__ == "__main__":
        endpoint, project, work = sys.argv[1:4]
        source = f"{work}/events.txt"

        # The reference run: DirectRunner, here, on the same input.
        direct = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--save_main_session"]))
        build_windowed(direct, source, f"{work}/direct-windowed/out")
        result = direct.run()
        result.wait_until_finish()
        with open(f"{work}/direct-windowed-metrics.json", "w") as f:
            json.dump(metric_rows(result.metrics().query()), f)

        for name, build in [("windowed", build_windowed), ("failing", build_failing)]:
            pipeline = beam.Pipeline(options=PipelineOptions(submit_options(endpoint, project, work, name)))
            build(pipeline, source, f"{work}/engine-{name}/out")
            print("JOB", name, pipeline.run().job_id(), flush=True)

        # Beam's wordcount example, as it is: it waits for its job, which no engine of this server runs.
        from apache_beam.examples import wordcount
        from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult

        DataflowPipelineResult.wait_until_finish = lambda self, duration=None: print("JOB wordcount", self.job_id())
        wordcount.run([*submit_options(endpoint, project, work, "wordcount"),
                       f"--input={work}/words.txt", f"--output={work}/engine-wordcount/out"])
    """
)


class Recorder:
    """A RunObserver that keeps everything, in order."""

    def __init__(self):
        self.events: list[tuple] = []
        self.records: list[logging.LogRecord] = []

    def running(self, detail: str, workers: int | None = None) -> None:
        self.events.append(("running", detail))

    def stage_state(self, stage_name: str, state: str, time_us: int) -> None:
        self.events.append(("stage", stage_name, state, time_us))

    def metrics(self, results) -> None:
        self.events.append(("metrics", results))

    def log(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def monitoring_infos(self, infos: list) -> None:
        self.events.append(("monitoring", infos))

    def stage_figures(self, figures: dict) -> None:
        self.events.append(("figures", figures))

    @property
    def snapshots(self) -> list:
        return [event[1] for event in self.events if event[0] == "metrics"]

    def states(self) -> dict[str, list[str]]:
        states: dict[str, list[str]] = {}
        for event in self.events:
            if event[0] == "stage":
                states.setdefault(event[1], []).append(event[2])
        return states


class Submitted:
    def __init__(self, work: Path, jobs: dict[str, dict]):
        self.work = work
        self.jobs = jobs

    def stage(self, name: str):
        return stage_job(self.jobs[name], FilePolicy([self.work]))


@pytest.fixture(scope="module")
def submitted(server, tmp_path_factory) -> Submitted:
    """Three jobs submitted once by DataflowRunner (and the DirectRunner reference run), fetched as stored."""
    work = tmp_path_factory.mktemp("engine")
    rng = random.Random(7)
    vocabulary = "the quick brown fox and a lazy dog alarm jumps over river".split()
    (work / "events.txt").write_text(
        "".join(f"{i * 2}\t{' '.join(rng.choice(vocabulary) for _ in range(6))}\n" for i in range(300))
    )
    (work / "words.txt").write_text(
        "".join(" ".join(rng.choice(vocabulary) for _ in range(8)) + "\n" for _ in range(200))
    )
    for name in ("windowed", "failing", "wordcount"):
        (work / f"staging-{name}").mkdir()
    script = work / "submit.py"
    script.write_text(SUBMIT)
    project = f"test-{uuid.uuid4().hex[:10]}"
    endpoint = server.url.replace("127.0.0.1", "localhost")  # "localhost": Beam stages to local directories
    done = subprocess.run(
        [sys.executable, str(script), endpoint, project, str(work)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    ids = dict(line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("JOB "))
    assert set(ids) == {"windowed", "failing", "wordcount"}, done.stdout
    jobs = {}
    for name, job_id in ids.items():
        answer = httpx.get(
            f"{server.url}/v1b3/projects/{project}/locations/us-central1/jobs/{job_id}", params={"view": "JOB_VIEW_ALL"}
        )
        assert answer.status_code == 200, answer.text
        jobs[name] = answer.json()
    return Submitted(work, jobs)


def sorted_lines(directory: Path, pattern: str) -> list[str]:
    files = sorted(directory.glob(pattern))
    assert files, f"no {pattern} in {directory}"
    return sorted(line for f in files for line in f.read_text().splitlines())


def direct_wordcount(work: Path) -> list[str]:
    from apache_beam.examples import wordcount

    wordcount.run(
        [f"--input={work}/words.txt", f"--output={work}/direct-wordcount/out", "--runner=DirectRunner"],
        save_main_session=False,
    )
    return sorted_lines(work / "direct-wordcount", "out-*")


# -- (a) wordcount ------------------------------------------------------------


@one_backend
def test_wordcount_matches_direct_runner(submitted):
    staged, warnings = submitted.stage("wordcount")
    assert warnings == []
    assert staged.job_type == "FNAPI_BATCH"
    assert staged.rewritten_environments  # DataflowRunner's Docker environment, now embedded
    assert all(env.urn == "beam:env:embedded_python:v1" for env in staged.pipeline.components.environments.values())

    result = EmbeddedEngine().run(staged, Recorder())

    assert (result.state, result.error) == (DONE, None)
    engine = sorted_lines(submitted.work / "engine-wordcount", "out-*-of-00001")
    assert engine == direct_wordcount(submitted.work)
    assert any(line.startswith("fox: ") for line in engine)


@pytest.mark.slow
@one_backend
def test_wordcount_on_worker_processes(submitted):
    """Two workers: SDK harness subprocesses, whose log records come back as records."""
    staged, _ = submitted.stage("wordcount")
    recorder = Recorder()

    result = EmbeddedEngine(default_workers=2).run(staged, recorder)

    assert (result.state, result.error) == (DONE, None)
    # WriteToText writes a shard per worker.
    assert sorted_lines(submitted.work / "engine-wordcount", "out-*-of-00002") == direct_wordcount(submitted.work)
    harness = [r for r in recorder.records if r.name == "apache_beam.runners.worker.sdk_worker_main"]
    assert any("semi_persistent_directory" in r.getMessage() for r in harness)  # the subprocess's own record
    assert not [r for r in recorder.records if r.levelno >= logging.WARNING], [r.getMessage() for r in recorder.records]


# -- (b) main session, side input, CoGroupByKey, windows, metrics -----------------


@one_backend
def test_windowed_pipeline_and_its_metrics_match_direct_runner(submitted):
    staged, warnings = submitted.stage("windowed")
    assert warnings == []
    assert staged.main_session is not None and staged.main_session.name == "pickled_main_session"
    recorder = Recorder()

    result = EmbeddedEngine().run(staged, recorder)

    assert (result.state, result.error) == (DONE, None)
    work = submitted.work
    engine = sorted_lines(work / "engine-windowed", "out-*")
    assert engine == sorted_lines(work / "direct-windowed", "out-*")
    assert len({line.split()[0] for line in engine}) > 5  # several windows

    from_script = json.loads((work / "direct-windowed-metrics.json").read_text())
    final = recorder.snapshots[-1]
    ours = sorted(
        [["counters", r.key.step, r.key.metric.namespace, r.key.metric.name, r.committed] for r in final["counters"]]
        + [
            [
                "distributions",
                r.key.step,
                r.key.metric.namespace,
                r.key.metric.name,
                [r.committed.sum, r.committed.count, r.committed.min, r.committed.max],
            ]
            for r in final["distributions"]
        ]
    )
    assert ours == from_script
    assert ["counters", "Tokenise", "tokenise", "words"] in [row[:4] for row in ours]


@one_backend
def test_a_main_session_that_does_not_load_fails_the_run(submitted, tmp_path):
    staged, _ = submitted.stage("windowed")
    staged.main_session = tmp_path / "pickled_main_session"
    staged.main_session.write_bytes(b"not a pickle")

    result = EmbeddedEngine().run(staged, Recorder())

    assert result.state == FAILED and "main session" in result.error


# -- (c) a failing pipeline ---------------------------------------------------


@one_backend
def test_failing_pipeline_gives_the_users_error(submitted):
    staged, _ = submitted.stage("failing")
    recorder = Recorder()

    result = EmbeddedEngine().run(staged, recorder)

    assert result.state == FAILED
    assert "ValueError: boom" in result.error and "in explode" in result.error
    assert "[while running 'Explode']" in result.error
    assert "apache_beam/" not in result.error  # Beam's own frames are left out
    states = recorder.states()
    failed = [name for name, seen in states.items() if STAGE_FAILED in seen]
    assert len(failed) == 1 and "Explode" in failed[0]


# -- (e) what the observer hears ----------------------------------------------


@one_backend
def test_observer_hears_stages_metrics_and_logs(submitted):
    staged, _ = submitted.stage("windowed")
    recorder = Recorder()

    assert EmbeddedEngine().run(staged, recorder).state == DONE

    states = recorder.states()
    assert len(states) >= 3
    assert all(seen == [STAGE_RUNNING, STAGE_DONE] for seen in states.values()), states
    assert any("Tokenise" in name for name in states)
    times = [event[3] for event in recorder.events if event[0] == "stage"]
    assert times == sorted(times)
    # Metrics come while the job runs, not only at its end: a snapshot precedes the last stage's start.
    last_start = max(i for i, event in enumerate(recorder.events) if event[0] == "stage" and event[2] == STAGE_RUNNING)
    early = [event for event in recorder.events[:last_start] if event[0] == "metrics"]
    assert early and any(r.key.metric.name == "words" for r in early[-1][1]["counters"])
    # The pipeline's own logging, with its level.
    alarms = [r for r in recorder.records if r.getMessage().startswith("alarm word at second")]
    assert alarms and all(r.levelno == logging.WARNING for r in alarms)
    # Records of the runner itself are not the pipeline's.
    assert not [r for r in recorder.records if r.name.startswith("apache_beam.runners.portability")]


# -- (d) the file policy ------------------------------------------------------


def test_file_policy_allows_paths_under_its_roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.pb").write_bytes(b"data")
    policy = FilePolicy([root])
    assert policy.check(str(root / "sub" / "f.pb")) == str((root / "sub" / "f.pb").resolve())
    assert policy.read_bytes(f"file://{root}/sub/f.pb") == b"data"
    assert policy.check(str(root / "sub" / ".." / "sub" / "f.pb")) == str((root / "sub" / "f.pb").resolve())
    assert policy.check(str(root)) == str(root.resolve())


def test_file_policy_refuses_what_is_outside_its_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("x")
    (root / "escape").symlink_to(outside)
    (tmp_path / "root-sibling").mkdir()
    policy = FilePolicy([root])

    cases = [
        str(outside / "secret"),
        f"file://{outside}/secret",
        f"{root}/../outside/secret",  # .. escape
        f"{root}/escape/secret",  # symlink escape
        str(tmp_path / "root-sibling"),  # a common prefix is not containment
    ]
    for location in cases:
        with pytest.raises(ApiError) as refused:
            policy.read_bytes(location)
        assert refused.value.status == "PERMISSION_DENIED", location
        assert location.removeprefix("file://") in refused.value.message
        assert "outside the allowed roots" in refused.value.message and str(root.resolve()) in refused.value.message
    # The resolved path is named too, so the operator sees where a link leads.
    with pytest.raises(ApiError) as refused:
        policy.check(f"{root}/escape/secret")
    assert str(outside.resolve() / "secret") in refused.value.message

    for location, status in [
        ("relative/pipeline.pb", "INVALID_ARGUMENT"),
        ("s3://bucket/x", "INVALID_ARGUMENT"),
        ("file://otherhost/x", "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(ApiError) as refused:
            policy.check(location)
        assert refused.value.status == status and location in refused.value.message


def test_gcs_locations_need_a_configured_endpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    policy = FilePolicy([tmp_path])
    with pytest.raises(ApiError) as refused:
        policy.read_bytes("gs://bucket/staging/pipeline.pb")
    assert refused.value.status == "FAILED_PRECONDITION"
    assert "gs://bucket/staging/pipeline.pb" in refused.value.message
    assert "STORAGE_EMULATOR_HOST" in refused.value.message

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://localhost:1")
    assert policy.check("gs://bucket/staging/pipeline.pb") == "gs://bucket/staging/pipeline.pb"


def test_staging_refuses_a_pipeline_outside_the_roots(tmp_path):
    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (elsewhere / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    job = _job_document(str(elsewhere / "pipeline.pb"))

    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]))
    assert refused.value.status == "PERMISSION_DENIED"
    assert str(elsewhere / "pipeline.pb") in refused.value.message

    escape = str(allowed / ".." / "elsewhere" / "pipeline.pb")
    job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"] = escape
    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]))
    assert refused.value.status == "PERMISSION_DENIED"

    # Temp and staging locations are held to the same roots.
    (allowed / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    job = _job_document(str(allowed / "pipeline.pb"), temp_location=str(elsewhere))
    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]))
    assert refused.value.status == "PERMISSION_DENIED" and str(elsewhere) in refused.value.message


# -- staging rules --------------------------------------------------------------


def _pipeline_proto(image: str | None = None, capabilities: list[str] | None = None):
    """A small pipeline as DataflowRunner would submit it: transforms in a Docker environment."""
    import apache_beam as beam
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.transforms import environments

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
    docker = environments.DockerEnvironment.from_container_image(
        image or environments.DockerEnvironment.default_docker_image()
    )
    proto = pipeline.to_runner_api(default_environment=docker)
    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            if image is not None:
                env.payload = beam_runner_api_pb2.DockerPayload(container_image=image).SerializeToString()
            if capabilities is not None:
                env.ClearField("capabilities")
                env.capabilities.extend(capabilities)
    return proto


def _job_document(pipeline_url: str, packages: list[dict] = (), beam_version: str | None = None, **options) -> dict:
    import apache_beam

    return {
        "id": "2026-01-01_00_00_00-1",
        "environment": {
            "sdkPipelineOptions": {"options": {"pipelineUrl": pipeline_url, "direct_num_workers": 1.0, **options}},
            "workerPools": [{"packages": list(packages)}],
            "userAgent": {"version": beam_version or apache_beam.__version__},
            "version": {"job_type": "FNAPI_BATCH"},
        },
    }


def test_staging_honours_what_it_can_and_warns_about_the_rest(tmp_path):
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto(image="example.com/team/custom:1").SerializeToString())
    (tmp_path / "requirements.txt").write_text("apache-beam\nprotobuf>=1\nbeamport-no-such-package==1.0\n")
    wheel = tmp_path / "tinymod-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tinymod.py", "VALUE = 42\n")
    (tmp_path / "mypkg-1.0.tar.gz").write_bytes(b"sdist")
    packages = [
        {"name": name, "location": str(tmp_path / name)}
        for name in ("requirements.txt", wheel.name, "mypkg-1.0.tar.gz")
    ]
    job = _job_document(str(tmp_path / "pipeline.pb"), packages, beam_version="2.10.0", num_workers=4.0)

    staged, warnings = stage_job(job, FilePolicy([tmp_path]))

    assert staged.python_path == [str(wheel)]
    assert staged.options["num_workers"] == 4 and isinstance(staged.options["num_workers"], int)
    assert "pipelineUrl" not in staged.options
    assert (
        staged.pipeline_options().view_as(__import__("apache_beam").options.pipeline_options.WorkerOptions).num_workers
        == 4
    )
    text = "\n".join(warnings)
    assert len(warnings) == 4, warnings
    assert "beamport-no-such-package==1.0" in text and "apache-beam" not in text.split("asks for")[1].split("\n")[0]
    assert "mypkg-1.0.tar.gz" in text
    assert "example.com/team/custom:1" in text
    assert "2.10.0" in text


def _sdist(root: Path, name: str, module: str, install_requires: list[str]) -> Path:
    """A source package as DataflowRunner stages --setup_file's (setup.py sdist), built from a setup.py."""
    project = root / f"{name}-src"
    (project / name).mkdir(parents=True)
    (project / name / "__init__.py").write_text(module)
    (project / "setup.py").write_text(
        f"import setuptools\nsetuptools.setup(name={name!r}, version='0.3', packages=[{name!r}], "
        f"install_requires={install_requires!r})\n"
    )
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(root)], cwd=project, check=True)
    return root / f"{name}-0.3.tar.gz"


def test_staging_builds_a_staged_source_package_into_a_wheel_on_the_jobs_path(tmp_path):
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    sdist = _sdist(tmp_path, "builtmod", "VALUE = 'built'\n", ["protobuf>=1", "beamport-no-such-dependency>=2"])
    workflow = tmp_path / "workflow.tar.gz"  # --setup_file's name for it
    workflow.write_bytes(sdist.read_bytes())
    packages = [{"name": "workflow.tar.gz", "location": str(workflow)}]

    staged, warnings = stage_job(_job_document(str(tmp_path / "pipeline.pb"), packages), FilePolicy([tmp_path]))

    [wheel] = staged.python_path
    assert wheel.endswith("builtmod-0.3-py3-none-any.whl")
    probe = f"import sys; sys.path[:0] = [{wheel!r}]; import builtmod; print(builtmod.VALUE, builtmod.__file__)"
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert said.startswith("built ") and wheel in said
    # The dependency this environment lacks is named; the one it has is not.
    assert len(warnings) == 1 and "beamport-no-such-dependency>=2" in warnings[0], warnings
    assert "protobuf" not in warnings[0]


def test_staging_warns_about_a_source_package_that_does_not_build_or_has_compiled_code(tmp_path):
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    (tmp_path / "broken-1.0.tar.gz").write_bytes(b"not a tarball")
    compiled = tmp_path / "compiled-src"
    compiled.mkdir()
    (compiled / "setup.py").write_text(  # a platform wheel: not pure Python
        "import setuptools\nfrom setuptools.dist import Distribution\n"
        "class Binary(Distribution):\n    def has_ext_modules(self):\n        return True\n"
        "setuptools.setup(name='compiled', version='1.0', py_modules=[], distclass=Binary)\n"
    )
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)], cwd=compiled, check=True)
    packages = [{"name": n, "location": str(tmp_path / n)} for n in ("broken-1.0.tar.gz", "compiled-1.0.tar.gz")]

    staged, warnings = stage_job(_job_document(str(tmp_path / "pipeline.pb"), packages), FilePolicy([tmp_path]))

    assert staged.python_path == []
    assert len(warnings) == 2, warnings
    assert "broken-1.0.tar.gz is not installed: it could not be built" in warnings[0]
    assert "compiled-1.0.tar.gz is not installed: it builds into compiled-1.0-" in warnings[1]
    assert "which has compiled code" in warnings[1]


def test_staging_refuses_environments_of_other_sdks(tmp_path):
    other = _pipeline_proto(image="apache/beam_typescript_sdk:2.77.0", capabilities=["beam:coder:bytes:v1"])
    (tmp_path / "pipeline.pb").write_bytes(other.SerializeToString())
    with pytest.raises(ApiError) as refused:
        stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]))
    assert refused.value.status == "FAILED_PRECONDITION" and "beam_typescript_sdk" in refused.value.message


def _go_pipeline(tmp_path: Path, artifacts: list[tuple[str, str]], capabilities: list[str] | None = None) -> str:
    """A pipeline whose transforms run in a Beam Go SDK environment depending on `artifacts` ((path, role) file
    artifacts; Beam Go's Dataflow runner stages its worker binary as a url one), written to tmp_path."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = _pipeline_proto(image="gcr.io/cloud-dataflow/v1beta3/beam_go_sdk:2.77.0", capabilities=capabilities)
    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            for path, role in artifacts:
                env.dependencies.add(
                    type_urn=common_urns.artifact_types.FILE.urn,
                    type_payload=beam_runner_api_pb2.ArtifactFilePayload(path=path).SerializeToString(),
                    role_urn=role,
                )
    (tmp_path / "pipeline.pb").write_bytes(proto.SerializeToString())
    return str(tmp_path / "pipeline.pb")


def test_staging_gives_a_go_environment_its_worker_binary_through_the_file_policy(tmp_path):
    from beamport.engine import registry
    from beamport.engine.staging import GO_WORKER_BINARY_ROLE

    allowed, elsewhere, work = tmp_path / "allowed", tmp_path / "elsewhere", tmp_path / "work"
    for directory in (allowed, elsewhere, work):
        directory.mkdir()
    binary, other = allowed / "wordcount", allowed / "notes.txt"
    binary.write_bytes(b"\x7fELF")  # not executable as staged: staging makes an executable copy
    other.write_text("x")
    (elsewhere / "worker").write_bytes(b"\x7fELF")
    go_flags = {"options": {"input": "/in.txt", "output": "/out.txt"}}
    artifacts = [(str(other), "beam:artifact:role:staging_to:v1"), (str(binary), GO_WORKER_BINARY_ROLE)]
    job = _job_document(_go_pipeline(allowed, artifacts, capabilities=[]))
    job["environment"]["sdkPipelineOptions"]["beam:option:go_options:v1"] = go_flags
    job["environment"]["userAgent"] = {"name": "Apache Beam SDK for Go", "version": "2.77.0"}
    job["environment"]["workerPools"] = [{"packages": [{"name": "worker", "location": str(binary)}]}]

    staged, warnings = stage_job(job, FilePolicy([allowed]), workdir=work)  # on the embedded engine

    assert warnings == []  # neither the binary as a package nor the Go SDK's version are warned about
    [(env_id, worker)] = staged.go_environments.items()
    assert Path(worker).parent == work and Path(worker).read_bytes() == b"\x7fELF" and os.access(worker, os.X_OK)
    assert staged.pipeline.components.environments[env_id].urn == "beam:env:docker:v1"  # the engine's to run
    assert staged.rewritten_environments == [] and staged.java_environments == {}
    assert staged.options["go_options"] == go_flags  # the program's flags, for its workers

    # An engine that does not run Go refuses it, naming the engines that do.
    python_only = dataclasses.replace(registry.PRISM, sdks=frozenset({registry.PYTHON}))
    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]), workdir=work, engine=python_only)
    assert refused.value.status == "FAILED_PRECONDITION" and "Go" in refused.value.message
    assert "embedded, Flink or Prism runs them" in refused.value.message

    # Recognised by its capabilities too; a binary outside the roots is never read; no binary at all is refused.
    capabilities = ["beam:version:sdk_base:go:apache/beam_go_sdk:2.77.0"]
    outside = _job_document(_go_pipeline(allowed, [(str(elsewhere / "worker"), GO_WORKER_BINARY_ROLE)], capabilities))
    with pytest.raises(ApiError) as refused:
        stage_job(outside, FilePolicy([allowed]), workdir=work, engine=registry.PRISM)
    assert refused.value.status == "PERMISSION_DENIED"
    none = _job_document(_go_pipeline(allowed, [], capabilities))
    with pytest.raises(ApiError) as refused:
        stage_job(none, FilePolicy([allowed]), workdir=work, engine=registry.PRISM)
    assert refused.value.status == "FAILED_PRECONDITION" and "worker binary" in refused.value.message


def _java_pipeline(tmp_path: Path, jars: list[str], capabilities: list[str] | None = None) -> str:
    """A pipeline whose transforms run in a Beam Java SDK environment depending on `jars` (url artifacts, as
    Beam Java's DataflowRunner stages them), written to tmp_path; its location."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = _pipeline_proto(image="gcr.io/cloud-dataflow/v1beta3/beam_java17_sdk:2.73.0", capabilities=capabilities)
    for env in proto.components.environments.values():
        if env.urn == "beam:env:docker:v1":
            for jar in jars:
                env.dependencies.add(
                    type_urn=common_urns.artifact_types.URL.urn,
                    type_payload=beam_runner_api_pb2.ArtifactUrlPayload(url=jar).SerializeToString(),
                    role_urn=common_urns.artifact_roles.STAGING_TO.urn,
                    role_payload=beam_runner_api_pb2.ArtifactStagingToRolePayload(
                        staged_name=os.path.basename(jar)
                    ).SerializeToString(),
                )
    (tmp_path / "pipeline.pb").write_bytes(proto.SerializeToString())
    return str(tmp_path / "pipeline.pb")


def test_staging_gives_a_java_environment_its_staged_jars_through_the_file_policy(tmp_path):
    from beamport.engine import registry

    allowed, elsewhere = tmp_path / "allowed", tmp_path / "elsewhere"
    allowed.mkdir(), elsewhere.mkdir()
    jars = [allowed / "b-1.jar", allowed / "a-2.jar"]
    for jar in [*jars, elsewhere / "c.jar"]:
        jar.write_bytes(b"PK")
    # Beam Java's runner v1 says JAVA_BATCH_AUTOSCALING; its packages are the same jars.
    job = _job_document(_java_pipeline(allowed, [str(jars[0]), f"file://{jars[1]}"], capabilities=[]))
    job["environment"]["version"]["job_type"] = "JAVA_BATCH_AUTOSCALING"
    job["environment"]["workerPools"] = [{"packages": [{"name": "b-1.jar", "location": str(jars[0])}]}]

    staged, warnings = stage_job(job, FilePolicy([allowed]))

    assert warnings == []  # neither the jars as packages nor Beam Java's version are warned about
    assert staged.job_type == "FNAPI_BATCH"
    [(env_id, class_path)] = staged.java_environments.items()
    assert class_path == [str(jars[0]), str(jars[1])]  # in the submitter's order
    assert staged.pipeline.components.environments[env_id].urn == "beam:env:docker:v1"  # the engine's to run
    assert staged.rewritten_environments == []

    # A jar outside the roots is never read.
    job = _job_document(_java_pipeline(allowed, [str(jars[0]), str(elsewhere / "c.jar")]))
    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]))
    assert refused.value.status == "PERMISSION_DENIED" and "c.jar" in refused.value.message

    # Recognised by its capabilities too, and refused by an engine that runs Python only (each of Beamport's runs
    # Java now: one as Flink was before it did).
    job = _job_document(
        _java_pipeline(allowed, [str(jars[0])], capabilities=["beam:version:sdk_base:apache/beam_java17_sdk:2.73.0"])
    )
    assert stage_job(job, FilePolicy([allowed]))[0].java_environments
    python_only = dataclasses.replace(registry.FLINK, sdks=frozenset({registry.PYTHON}))
    with pytest.raises(ApiError) as refused:
        stage_job(job, FilePolicy([allowed]), engine=python_only)
    assert refused.value.status == "FAILED_PRECONDITION" and "Java" in refused.value.message
    assert "embedded, Flink or Prism" in refused.value.message  # the engines that run it


def test_staging_needs_a_pipeline(tmp_path):
    with pytest.raises(ApiError) as refused:
        stage_job({"id": "x", "environment": {}}, FilePolicy([tmp_path]))
    assert refused.value.status == "FAILED_PRECONDITION" and "pipelineUrl" in refused.value.message

    (tmp_path / "pipeline.pb").write_bytes(b"\xff\xff not a proto")
    with pytest.raises(ApiError) as refused:
        stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]))
    assert refused.value.status == "INVALID_ARGUMENT"


def test_staging_points_a_python_jobs_bigquery_io_at_the_servers_bigquery_endpoint(tmp_path, monkeypatch):
    """With BIGQUERY_EMULATOR_HOST (the server's), staging adds Beamport's BigQuery plugin to the job's own and
    carries the endpoint in an option (beamport/endpoints.py); without it, the options stay as submitted."""
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    job = _job_document(str(tmp_path / "pipeline.pb"), beam_plugins=["apache_beam.io.filesystem.FileSystem"])
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    options = stage_job(job, FilePolicy([tmp_path]))[0].options
    assert options["beam_plugins"] == ["apache_beam.io.filesystem.FileSystem"]
    assert "beamport_emulator_endpoints" not in options

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9050")
    options = stage_job(job, FilePolicy([tmp_path]))[0].options
    assert options["beam_plugins"] == ["apache_beam.io.filesystem.FileSystem", "beamport.io.emulators_plugin"]
    assert options["beamport_emulator_endpoints"]["BIGQUERY_EMULATOR_HOST"] == "http://127.0.0.1:9050"


def test_the_emulators_plugin_has_beam_look_for_credentials_once(monkeypatch):
    """Beam's GCS and BigQuery I/O retry their search for Google default credentials for about 25 s before they
    connect anonymously; with the server's emulators, Beamport's plugin has them look once, to the same end."""
    import importlib
    import time

    import google.auth
    from apache_beam.internal.gcp import auth
    from apache_beam.options.pipeline_options import PipelineOptions

    from beamport.io import emulators_plugin

    monkeypatch.setattr(
        auth._Credentials, "_get_credentials_with_retrys", auth._Credentials._get_credentials_with_retrys
    )
    monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
    calls = []

    def no_credentials(**kwargs):
        calls.append(kwargs)
        raise google.auth.exceptions.DefaultCredentialsError("none here")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    importlib.reload(emulators_plugin)
    started = time.monotonic()
    assert auth.get_service_credentials(PipelineOptions([])) is None  # anonymous, as after Beam's retries
    assert len(calls) == 1 and time.monotonic() - started < 2


def test_only_the_emulator_variables_come_back_from_a_jobs_option():
    """A job's options are its own to write: sdk_boot and go_boot take only the endpoint variables from them."""
    from beamport import endpoints

    given = {"LD_PRELOAD": "/tmp/x.so", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "STORAGE_EMULATOR_HOST": 5}
    assert endpoints.from_option(given) == {"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}
    assert endpoints.from_option("PUBSUB_EMULATOR_HOST=x") == {}


def test_unsatisfied_requirements():
    assert unsatisfied_requirements("# pins\napache-beam>=2.0\n\nprotobuf\n") == []
    missing = unsatisfied_requirements("apache-beam<1\nbeamport-no-such-package\n--index-url http://x\n")
    assert missing[0].startswith("apache-beam<1 (installed: ")
    assert missing[1:] == ["beamport-no-such-package", "--index-url http://x"]


def test_a_staged_pipeline_runs(tmp_path):
    """Without any server: a pipeline proto as DataflowRunner stages it, run to its end."""
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    staged, warnings = stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]))
    assert warnings == [] and staged.main_session is None
    recorder = Recorder()
    assert EmbeddedEngine().run(staged, recorder).state == DONE
    assert recorder.states() and all(s[-1] == STAGE_DONE for s in recorder.states().values())


def _log_element(x):
    logging.warning("element %s", x)
    return x


def test_engine_in_a_thread_leaves_its_hosts_records_out(tmp_path):
    """A host runs the engine in a thread and logs from its main thread: those records are not the pipeline's."""
    import threading

    import apache_beam as beam

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(range(20)) | beam.Map(_log_element)
    (tmp_path / "pipeline.pb").write_bytes(pipeline.to_runner_api().SerializeToString())
    staged, _ = stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]))
    recorder = Recorder()
    outcome = []
    engine = threading.Thread(target=lambda: outcome.append(EmbeddedEngine().run(staged, recorder)))
    host = logging.getLogger("host")
    engine.start()
    while engine.is_alive():
        host.warning("host chatter")
        engine.join(0.001)

    assert outcome[0].state == DONE
    messages = [r.getMessage() for r in recorder.records]
    assert sorted(m for m in messages if m.startswith("element")) == sorted(f"element {i}" for i in range(20))
    assert "host chatter" not in messages


def _timestamped_at_its_second(kv):
    import apache_beam as beam

    return beam.window.TimestampedValue(kv, kv[1])


def _log_sum(kv, window=DoFn.WindowParam):
    logging.warning("sum %s %s window %s", kv[0], kv[1], int(window.start))


def test_a_reshuffle_of_windowed_values_runs_with_those_values_opaque(tmp_path):
    """Beam Python's Reshuffle on non-global windows (since 2.65) carries each element's window in its value, with
    a pickled window coder engines cannot decode: staging length-prefixes that coder (engine/reshuffle_staging.py)
    and the embedded engine still gives each window its own sum."""
    import apache_beam as beam
    from apache_beam.transforms.util import ReshufflePerKey

    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create([("a", 1), ("a", 2), ("b", 5), ("a", 61), ("b", 119)])
        | "Stamp" >> beam.Map(_timestamped_at_its_second)
        | beam.WindowInto(beam.window.FixedWindows(60))
        | "Shuffle" >> beam.Reshuffle()
        | "ShufflePerKey" >> ReshufflePerKey()
        | beam.CombinePerKey(sum)
        | "Log" >> beam.Map(_log_sum)
    )
    (tmp_path / "pipeline.pb").write_bytes(pipeline.to_runner_api().SerializeToString())
    staged, _ = stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]))

    components = staged.pipeline.components
    reshuffled = [
        components.coders[components.pcollections[pcoll].coder_id]
        for t in components.transforms.values()
        if t.spec.urn == "beam:transform:group_by_key:v1" and t.unique_name.startswith("Shuffle")
        for pcoll in t.inputs.values()
    ]
    assert len(reshuffled) == 2
    for kv in reshuffled:  # KV<key, length_prefix<windowed_value<value, pickled window coder>>>
        value = components.coders[kv.component_coder_ids[1]]
        assert value.spec.urn == "beam:coder:length_prefix:v1"
        assert components.coders[value.component_coder_ids[0]].spec.urn == "beam:coder:windowed_value:v1"

    recorder = Recorder()
    assert EmbeddedEngine().run(staged, recorder).state == DONE
    sums = sorted(r.getMessage() for r in recorder.records if r.getMessage().startswith("sum "))
    assert sums == ["sum a 3 window 0", "sum a 61 window 60", "sum b 119 window 60", "sum b 5 window 0"]


def test_on_flink_reshuffle_per_key_is_given_beams_reshuffle_urn(tmp_path):
    """Flink runs Beam's reshuffle URN as a rebalance; Python's ReshufflePerKey (WriteToBigQuery's CommitInsertIds)
    lacks the URN, and its globally windowed GroupByKey dropped a drained window's output as late there: staging
    for Flink gives it the URN (its input and output alike), and for other engines leaves it as it is."""
    import apache_beam as beam
    from apache_beam.transforms.util import ReshufflePerKey

    from beamport.engine import registry

    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create([("a", 1)])
        | beam.WindowInto(beam.window.FixedWindows(60))
        | "CommitInsertIds" >> ReshufflePerKey()
        | "Shuffle" >> beam.Reshuffle()
        | "Keyed" >> beam.Map(lambda kv: kv)
    )
    (tmp_path / "pipeline.pb").write_bytes(pipeline.to_runner_api().SerializeToString())

    def urns(engine) -> dict[str, str]:
        staged, _ = stage_job(_job_document(str(tmp_path / "pipeline.pb")), FilePolicy([tmp_path]), engine=engine)
        names = ("CommitInsertIds", "Shuffle", "Shuffle/ReshufflePerKey")
        return {
            t.unique_name: t.spec.urn for t in staged.pipeline.components.transforms.values() if t.unique_name in names
        }

    reshuffle = "beam:transform:reshuffle:v1"
    assert urns(registry.FLINK) == {
        "CommitInsertIds": reshuffle,
        "Shuffle": reshuffle,
        "Shuffle/ReshufflePerKey": reshuffle,
    }
    composite = "beam:transform:generic_composite:v1"
    assert urns(registry.PRISM) == {
        "CommitInsertIds": composite,
        "Shuffle": reshuffle,
        "Shuffle/ReshufflePerKey": composite,
    }


def test_a_pickler_that_is_not_installed_fails_the_run(tmp_path):
    (tmp_path / "pipeline.pb").write_bytes(_pipeline_proto().SerializeToString())
    staged, _ = stage_job(_job_document(str(tmp_path / "pipeline.pb"), pickle_library="dill"), FilePolicy([tmp_path]))
    from apache_beam.internal import pickler

    result = EmbeddedEngine().run(staged, Recorder())
    if pickler.dill_pickler is None:  # Beam installed without its dill extra, as here
        assert result.state == FAILED and "dill" in result.error
    else:
        assert result.state == DONE


@pytest.mark.slow
def test_a_job_staged_on_gcs_runs(tmp_path, monkeypatch):
    """pipelineUrl and the main session on gs://, through a GCS emulator (STORAGE_EMULATOR_HOST)."""
    from conftest import free_port
    from gcp_storage_emulator import server as emulator

    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="staging-bucket")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        from google.cloud import storage

        bucket = storage.Client.create_anonymous_client().bucket("staging-bucket")
        bucket.blob("job/pipeline.pb").upload_from_string(_pipeline_proto().SerializeToString())
        from apache_beam.internal import pickler

        pickler.dump_session(str(tmp_path / "session"))
        bucket.blob("job/pickled_main_session").upload_from_filename(str(tmp_path / "session"))
        packages = [{"name": "pickled_main_session", "location": "gs://staging-bucket/job/pickled_main_session"}]
        job = _job_document("gs://staging-bucket/job/pipeline.pb", packages)

        staged, warnings = stage_job(job, FilePolicy([tmp_path / "nothing-local"]), workdir=tmp_path)

        assert warnings == []
        assert staged.main_session == tmp_path / "pickled_main_session"
        assert EmbeddedEngine().run(staged, Recorder()).state == DONE
        with pytest.raises(ApiError) as missing:
            FilePolicy([]).read_bytes("gs://staging-bucket/job/nothing-here")
        assert missing.value.status == "NOT_FOUND"
    finally:
        server.stop()


# -- parallelism ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options, default_workers, expected",
    [
        ({"direct_num_workers": 1, "direct_running_mode": "in_memory"}, 1, (1, THREADS)),
        ({"direct_num_workers": 1}, 2, (2, PROCESSES)),
        ({"num_workers": 2, "direct_num_workers": 1}, 1, (2, PROCESSES)),
        # Dataflow's num_workers counts machines: here no more workers than this host's cores.
        ({"num_workers": 500}, 1, (os.cpu_count(), PROCESSES if os.cpu_count() > 1 else THREADS)),
        ({"direct_num_workers": 2}, 1, (2, PROCESSES)),
        ({"direct_num_workers": 2, "direct_running_mode": "multi_threading"}, 1, (2, THREADS)),
        ({"direct_num_workers": 1, "direct_running_mode": "multi_processing"}, 1, (1, PROCESSES)),
        ({"direct_num_workers": 0}, 1, (os.cpu_count(), PROCESSES if os.cpu_count() > 1 else THREADS)),
    ],
)
def test_parallelism(options, default_workers, expected):
    chosen = parallelism_for(options, default_workers)
    assert (chosen.workers, chosen.mode) == expected


def test_portable_metrics_are_the_user_metrics_with_one_side_standing_for_both():
    """What Prism's GetJobMetrics and Flink's accumulator give (MonitoringInfos) becomes DirectRunner's
    `metrics().query()` form: user metrics only; the side the engine keeps stands for the other."""
    from apache_beam.metrics import monitoring_infos
    from apache_beam.metrics.cells import DistributionData
    from apache_beam.portability.api import beam_job_api_pb2

    from beamport.engine.portable import user_metrics

    step = "ref_AppliedPTransform_Observe_9"
    counter = monitoring_infos.int64_user_counter("observed", "lines", 3, ptransform=step)
    distribution = monitoring_infos.int64_user_distribution(
        "observed", "values", DistributionData(14, 3, 2, 7), ptransform=step
    )
    system = monitoring_infos.int64_counter(monitoring_infos.ELEMENT_COUNT_URN, 9, pcollection="pc")
    results = beam_job_api_pb2.MetricResults(committed=[counter, distribution, system])

    found = user_metrics(results, one_side="committed")
    (lines,) = found["counters"]
    assert (lines.key.step, lines.key.metric.name, lines.committed, lines.attempted) == (
        "ref_AppliedPTransform_Observe_9",
        "lines",
        3,
        3,
    )
    (values,) = found["distributions"]
    assert (values.attempted.sum, values.attempted.count, values.attempted.min, values.attempted.max) == (14, 3, 2, 7)
    assert user_metrics(results)["counters"][0].attempted is None  # Beam's own reading: attempted not kept


def test_a_worker_log_entry_becomes_its_log_record():
    from apache_beam.portability.api import beam_fn_api_pb2

    from beamport.engine.capture import entry_record

    entry = beam_fn_api_pb2.LogEntry(
        severity=beam_fn_api_pb2.LogEntry.Severity.WARN,
        message="observed k0,5",
        log_location="/tmp/x/site-packages/mypipeline/steps.py:42",
        thread="Thread-3",
        trace="Traceback ...",
    )
    entry.timestamp.seconds, entry.timestamp.nanos = 1_800_000_000, 250_000_000
    record = entry_record(entry)
    assert (record.levelno, record.getMessage(), record.name, record.lineno) == (
        logging.WARNING,
        "observed k0,5",
        "mypipeline.steps",
        42,
    )
    assert record.created == 1_800_000_000.25 and record.threadName == "Thread-3" and record.exc_text == "Traceback ..."


def test_a_pubsub_messages_event_time_is_its_attribute_in_ms_or_rfc3339_else_its_publish_time():
    """As Dataflow reads a `timestamp_attribute`: milliseconds since the epoch, or RFC 3339 (any offset)."""
    import datetime

    from apache_beam.utils.timestamp import Timestamp
    from google.pubsub_v1.types import PubsubMessage

    from beamport.io.pubsub import event_time

    published = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    def message(**attributes):
        return PubsubMessage(data=b"x", attributes=attributes, publish_time=published)

    assert event_time(message(ts="1767323045123"), "ts") == Timestamp(micros=1767323045123000)
    assert event_time(message(ts="2026-01-02T03:04:05.5Z"), "ts") == Timestamp(1767323045.5)
    assert event_time(message(ts="2026-01-02T04:04:05+01:00"), "ts") == Timestamp(1767323045)
    assert event_time(message(other="1"), "ts") == Timestamp(1767323045), "no attribute: the publish time"
    assert event_time(message(ts="1767323045123"), "") == Timestamp(1767323045), "none named: the publish time"


def test_a_prism_jobs_stages_and_watermarks_come_from_the_lines_its_prism_logs(tmp_path):
    """The Prism scripts/prism-build makes logs a job's stages' transforms once and their watermarks every second
    (JSON lines, as its other lines): the job's stages are those, named by their transforms' outermost names; a
    streaming job's figures are their watermarks, none before the first one or from the end of the global window
    on; the lines are not kept in prism.log. The transforms Prism expands one into are named after it."""
    import io
    import json

    from apache_beam.portability.api import beam_runner_api_pb2

    from beamport.engine.base import STAGE_DONE, STAGE_RUNNING
    from beamport.engine.prism import PrismLog, PrismStages

    pipeline = beam_runner_api_pb2.Pipeline()
    for transform_id, name in (("t1", "Read/Impulse"), ("t2", "Read/Split"), ("t3", "Observe"), ("t4", "Write")):
        pipeline.components.transforms[transform_id].unique_name = name
    end_of_window = (2**63 - 1) // 1000 - 24 * 60 * 60 * 1000
    lines = [
        {"msg": "beamport: stage transforms",
         "stages": {"stage-010": ["t4"], "stage-002": ["et2_processandsplit", "t3", "t1"]}},
        {"msg": "something else of Prism's"},
        {"msg": "beamport: stage watermarks", "stages": [
            {"stage": "stage-002", "input_ms": end_of_window, "output_ms": 1_700_000_000_500, "pending": 0},
            {"stage": "stage-010", "input_ms": 1_700_000_000_000, "output_ms": -(2**63 // 1000), "pending": 3},
            {"stage": "stage-999", "input_ms": 1, "output_ms": 1, "pending": 0},
        ]},
    ]  # fmt: skip
    output = io.BytesIO(b"".join(json.dumps({"time": "t", "level": "INFO", **line}).encode() + b"\n" for line in lines))
    recorder = Recorder()
    stages = PrismStages(recorder, pipeline, streaming=True)
    PrismLog(tmp_path / "prism", output, recorder, tmp_path / "prism.log", stages=stages).forward()
    stages.ended(STAGE_DONE)
    assert recorder.states() == {
        "stage-002: Read, Observe": [STAGE_RUNNING, STAGE_DONE],
        "stage-010: Write": [STAGE_RUNNING, STAGE_DONE],
    }
    (figures,) = [event[1] for event in recorder.events if event[0] == "figures"]
    read, write = figures["stage-002: Read, Observe"], figures["stage-010: Write"]
    assert (read.input_watermark_us, read.output_watermark_us) == (None, 1_700_000_000_500_000)
    assert (write.input_watermark_us, write.output_watermark_us) == (1_700_000_000_000_000, None)
    assert "beamport: stage" not in (tmp_path / "prism.log").read_text()
    assert "something else of Prism's" in (tmp_path / "prism.log").read_text()

    # A batch job has the stages, and no figures; a Prism that logs no stages, the one stage "Prism".
    recorder = Recorder()
    stages = PrismStages(recorder, pipeline, streaming=False)
    for line in lines:
        stages.told(line["msg"], line.get("stages"))
    assert [event[0] for event in recorder.events] == ["stage", "stage"]
    recorder = Recorder()
    PrismStages(recorder, pipeline, streaming=True).ended(STAGE_DONE)
    assert recorder.states() == {"Prism": [STAGE_RUNNING, STAGE_DONE]}


@pytest.mark.parametrize(
    "said, level",
    [
        ('Python sdk harness failed: ... details = "Runner closed connection"', logging.INFO),  # control stream
        ("Failed to read inputs in the data plane. ... Multiplexer hanging up", logging.INFO),  # data stream
        ("Python sdk harness failed: ZeroDivisionError: division by zero", logging.ERROR),
    ],
)
def test_a_runner_hanging_up_on_an_sdk_worker_is_no_error_of_the_job(said, level):
    """Flink closes an SDK worker's streams when the job's tasks end (a drain, a cancel): what the worker logs of
    that is an INFO in the job's messages; any other error stays an ERROR."""
    from beamport.engine.capture import hang_up_quieted

    record = logging.LogRecord("sdk", logging.ERROR, "", 0, said, None, None)
    assert hang_up_quieted(record).levelno == level
