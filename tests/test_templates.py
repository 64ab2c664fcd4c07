"""Classic templates: written by Beam's DataflowRunner (--template_location), launched with runtime
parameters through google-api-python-client and google-cloud-dataflow-client, run for real."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from conftest import Api, Server, beamport_command, discovery_client
from test_running_jobs import PIPELINES, read_output, run, texts, wait_state

pytestmark = pytest.mark.slow

METADATA = {
    "name": "Greeter",
    "description": "Prefixes every line of a text file with a greeting.",
    "parameters": [
        {"name": "input", "label": "Input file", "helpText": "The text to read."},
        {"name": "output", "label": "Output prefix", "helpText": "Where to write."},
        {"name": "greeting", "label": "Greeting", "helpText": "A word.", "isOptional": True, "regexes": ["[a-z]+"]},
    ],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server that runs jobs, and a template (with its metadata) written by DataflowRunner."""
    base = tmp_path_factory.mktemp("templates")
    srv = Server(base / "data", extra_args=("--allow-path", str(base))).start()
    stage = base / "stage"
    stage.mkdir()
    template = base / "greeter"
    run(
        [
            str(PIPELINES / "template_pipeline.py"),
            "--runner=DataflowRunner",
            "--project=p",
            "--region=us-central1",
            f"--temp_location={stage}",
            f"--staging_location={stage}",
            f"--template_location={template}",
            "--dataflow_endpoint=http://localhost:1",
            "--no_auth",
        ]
    )
    Path(f"{template}_metadata").write_text(json.dumps(METADATA))
    (base / "in.txt").write_text("world\nthere\n")
    yield srv, base, template
    srv.stop()


def test_a_template_launches_with_its_parameters_through_both_clients(served, project):
    srv, base, template = served
    api = Api(srv.url, project)
    templates = discovery_client(srv.url).projects().locations().templates()
    described = templates.get(projectId=project, location="us-central1", gcsPath=str(template)).execute()
    assert described["templateType"] == "LEGACY" and described["metadata"]["name"] == "Greeter"
    assert [p["name"] for p in described["metadata"]["parameters"]] == ["input", "output", "greeting"]

    launched = templates.launch(
        projectId=project,
        location="us-central1",
        gcsPath=str(template),
        body={
            "jobName": "greet-one",
            "parameters": {"input": str(base / "in.txt"), "output": str(base / "one" / "out"), "greeting": "hi"},
            "environment": {"additionalUserLabels": {"team": "a"}, "machineType": "n1-standard-4"},
        },
    ).execute()
    first = launched["job"]

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import dataflow_v1beta3 as dataflow

    client = dataflow.TemplatesServiceClient(
        transport="rest", credentials=AnonymousCredentials(), client_options={"api_endpoint": srv.url}
    )
    second = client.launch_template(
        request={
            "project_id": project,
            "location": "us-central1",
            "gcs_path": str(template),
            "launch_parameters": {
                "job_name": "greet-two",
                "parameters": {"input": str(base / "in.txt"), "output": str(base / "two" / "out")},
            },
        }
    ).job

    for job_id in (first["id"], second.id):
        done = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
        assert done["currentState"] == "JOB_STATE_DONE", texts(api, job_id)
    assert read_output(base / "one" / "out") == ["hi there", "hi world"]
    assert read_output(base / "two" / "out") == ["hello there", "hello world"]  # the option's default
    first_job = api.get(first["id"]).json()
    assert first_job["labels"] == {"team": "a"} and first_job["name"] == "greet-one"
    messages = texts(api, first["id"])
    assert any("Launched from the template" in t for t in messages)
    assert any("machineType has no meaning on Beamport" in t for t in messages)


def test_templates_create_makes_a_job(served, project):
    srv, base, template = served
    api = Api(srv.url, project)
    job = (
        discovery_client(srv.url)
        .projects()
        .locations()
        .templates()
        .create(
            projectId=project,
            location="us-central1",
            body={
                "jobName": "greet-created",
                "gcsPath": str(template),
                "parameters": {
                    "input": str(base / "in.txt"),
                    "output": str(base / "created" / "out"),
                    "greeting": "yo",
                },
            },
        )
        .execute()
    )
    assert job["name"] == "greet-created"
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert read_output(base / "created" / "out") == ["yo there", "yo world"]

    # The same request under its proto field names (snake_case).
    snake = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/templates",
        json={
            "job_name": "greet-snake",
            "gcs_path": str(template),
            "parameters": {"input": str(base / "in.txt"), "output": str(base / "created-snake" / "out")},
            "environment": {"additional_user_labels": {"made_by": "snake"}},
        },
    )
    assert snake.status_code == 200, snake.text
    assert snake.json()["name"] == "greet-snake" and snake.json()["labels"] == {"made_by": "snake"}
    done = wait_state(api, snake.json()["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, snake.json()["id"])


def test_bad_launches_name_the_problem_and_create_nothing(served, project, tmp_path):
    srv, base, template = served
    api = Api(srv.url, project)
    path = f"/v1b3/projects/{project}/locations/us-central1/templates:launch"
    good = {"input": str(base / "in.txt"), "output": str(base / "bad" / "out")}

    def refused(gcs_path, body, status, code=400):
        response = api.client.post(path, params={"gcsPath": gcs_path}, json=body)
        assert response.status_code == code, response.text
        assert response.json()["error"]["status"] == status
        return response.json()["error"]["message"]

    assert "'input' is required" in refused(
        str(template), {"jobName": "x", "parameters": {"output": "o"}}, "INVALID_ARGUMENT"
    )
    assert "'greeting'" in refused(
        str(template), {"jobName": "x", "parameters": {**good, "greeting": "Hi!"}}, "INVALID_ARGUMENT"
    )
    assert "'colour' is not a parameter" in refused(
        str(template), {"jobName": "x", "parameters": {**good, "colour": "red"}}, "INVALID_ARGUMENT"
    )
    assert "jobName" in refused(str(template), {"parameters": good}, "INVALID_ARGUMENT")
    assert "no active job" in refused(
        str(template), {"jobName": "nobody", "parameters": good, "update": True}, "FAILED_PRECONDITION"
    )
    assert "does not exist" in refused(str(base / "missing"), {"jobName": "x"}, "NOT_FOUND", 404)
    (tmp_path / "notes.txt").write_text("not json")
    not_template = base / "notes.txt"
    not_template.write_text("just some notes")
    assert "not a Dataflow template" in refused(str(not_template), {"jobName": "x"}, "INVALID_ARGUMENT")
    (base / "object.json").write_text('{"name": "x"}')
    assert "not a Dataflow template" in refused(str(base / "object.json"), {"jobName": "x"}, "INVALID_ARGUMENT")
    assert (
        "PERMISSION_DENIED"
        == api.client.post(path, params={"gcsPath": "/etc/passwd"}, json={"jobName": "x"}).json()["error"]["status"]
    )
    # validateOnly checks everything and creates nothing.
    ok = api.client.post(
        path, params={"gcsPath": str(template), "validateOnly": "true"}, json={"jobName": "checked", "parameters": good}
    )
    assert ok.status_code == 200 and ok.json() == {}
    assert (
        "'input' is required"
        in api.client.post(
            path, params={"gcsPath": str(template), "validateOnly": "true"}, json={"jobName": "x", "parameters": {}}
        ).json()["error"]["message"]
    )
    assert api.all_jobs() == []


FLEX_METADATA = {
    "name": "Flex greeter",
    "parameters": [
        {"name": "input", "label": "Input", "helpText": "Text to read.", "paramType": "GCS_READ_FILE"},
        {"name": "output", "label": "Output", "helpText": "Prefix to write.", "paramType": "GCS_WRITE_FILE"},
        {"name": "greeting", "label": "Greeting", "helpText": "A word.", "isOptional": True},
    ],
}

YAML_PIPELINE = """\
pipeline:
  type: chain
  transforms:
    - type: ReadFromText
      config:
        path: "{{ input }}"
    - type: MapToFields
      config:
        language: python
        fields:
          line: "'{{ greeting }} ' + line"
    - type: WriteToText
      config:
        path: "{{ output }}"
"""


def build_greeter_flex_template(directory: Path, program_name: str = "flex_main.py") -> tuple[Path, Path]:
    """tests/pipelines/flex_main.py copied into `directory` and built into a flex template there with
    `beamport templates build-flex`: the program and the spec file."""
    program = directory / program_name
    shutil.copyfile(PIPELINES / "flex_main.py", program)
    (directory / "flex_metadata.json").write_text(json.dumps(FLEX_METADATA))
    spec = directory / "greeter-flex.json"
    beamport_command(
        "templates",
        "build-flex",
        str(spec),
        "--py-path",
        str(program),
        "--metadata-file",
        str(directory / "flex_metadata.json"),
    )
    return program, spec


def test_a_python_flex_template_runs_its_launcher_which_submits_the_job(served, project):
    srv, base, _ = served
    api = Api(srv.url, project)
    program, spec = build_greeter_flex_template(base)
    assert json.loads(spec.read_text())["sdkInfo"] == {"language": "PYTHON"}

    launched = (
        discovery_client(srv.url)
        .projects()
        .locations()
        .flexTemplates()
        .launch(
            projectId=project,
            location="us-central1",
            body={
                "launchParameter": {
                    "jobName": "flex-greet",
                    "containerSpecGcsPath": str(spec),
                    "parameters": {
                        "input": str(base / "in.txt"),
                        "output": str(base / "flex" / "out"),
                        "greeting": "howdy",
                    },
                }
            },
        )
        .execute()
    )
    job = launched["job"]
    assert job["name"] == "flex-greet"
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert read_output(base / "flex" / "out") == ["howdy there", "howdy world"]
    assert any("Launched from a flex template" in t for t in texts(api, job["id"]))

    # Airflow's operators send proto field names (snake_case), at every depth; parameters' keys are data.
    snake = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/flexTemplates:launch",
        json={
            "launch_parameter": {
                "job_name": "flex-snake",
                "container_spec_gcs_path": str(spec),
                "parameters": {"input": str(base / "in.txt"), "output": str(base / "snake" / "out"), "greeting": "hi"},
                "environment": {"additional_user_labels": {"launched_by": "airflow"}},
            }
        },
        timeout=600,  # the launch answers once the launcher has submitted the job: Beam builds the pipeline first
    )
    assert snake.status_code == 200, snake.text
    job = snake.json()["job"]
    assert job["name"] == "flex-snake"
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert done["labels"] == {"launched_by": "airflow"}
    assert read_output(base / "snake" / "out") == ["hi there", "hi world"]


def test_a_yaml_template_runs_with_its_parameters_as_jinja_variables(served, project):
    srv, base, _ = served
    api = Api(srv.url, project)
    (base / "pipeline.yaml").write_text(YAML_PIPELINE)
    spec = base / "yaml-spec.json"
    beamport_command("templates", "build-flex", str(spec), "--yaml-pipeline-file", str(base / "pipeline.yaml"))
    assert json.loads(spec.read_text())["metadata"]["yamlDefinition"] == YAML_PIPELINE
    beamport_command(
        "flex-template",
        "run",
        "yaml-greet",
        "--template-file-gcs-location",
        str(spec),
        "--endpoint",
        srv.url,
        "--project",
        project,
        "--parameters",
        f"input={base / 'in.txt'},output={base / 'yaml' / 'out'},greeting=hey",
    )
    (job,) = api.all_jobs()
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert read_output(base / "yaml" / "out") == ["hey there", "hey world"]


def test_bad_flex_launches_are_refused(served, project):
    srv, base, _ = served
    api = Api(srv.url, project)
    path = f"/v1b3/projects/{project}/locations/us-central1/flexTemplates:launch"

    def refused(launch, status, code=400, **extra):
        response = api.client.post(path, json={"launchParameter": launch, **extra})
        assert response.status_code == code, response.text
        assert response.json()["error"]["status"] == status
        return response.json()["error"]["message"]

    assert "does not exist" in refused(
        {"jobName": "x", "containerSpecGcsPath": str(base / "nope.json")}, "NOT_FOUND", 404
    )
    (base / "junk.json").write_text("{")
    assert "not a flex template spec" in refused(
        {"jobName": "x", "containerSpecGcsPath": str(base / "junk.json")}, "INVALID_ARGUMENT"
    )
    go = {"image": "gcr.io/x/y", "sdkInfo": {"language": "GO"}, "metadata": {"name": "g"}}
    assert "GO" in refused({"jobName": "x", "containerSpec": go}, "UNIMPLEMENTED", 501)
    java = {"image": "gcr.io/x/y", "sdkInfo": {"language": "JAVA"}, "metadata": {"name": "j"}}
    assert "FLEX_TEMPLATE_JAVA_MAIN_CLASS" in refused({"jobName": "x", "containerSpec": java}, "FAILED_PRECONDITION")
    # A Java spec's jars are read through the file policy, as a Python spec's program is.
    for jar, status, code in (
        ("/etc/passwd", "PERMISSION_DENIED", 403),
        (str(base / "no.jar"), "FAILED_PRECONDITION", 400),
    ):
        written = {**java, "beamport": {"javaMainClass": "a.Main", "javaClassPath": [jar]}}
        (base / "java-flex.json").write_text(json.dumps(written))
        refused({"jobName": "x", "containerSpecGcsPath": str(base / "java-flex.json")}, status, code)
    image_only = {"image": "gcr.io/x/y", "sdkInfo": {"language": "PYTHON"}}
    assert "runs no container images" in refused({"jobName": "x", "containerSpec": image_only}, "FAILED_PRECONDITION")
    spec = base / "greeter-flex.json"
    if spec.exists():
        assert "jobName" in refused({"containerSpecGcsPath": str(spec)}, "INVALID_ARGUMENT")
        assert "'input' is required" in refused(
            {"jobName": "x", "containerSpecGcsPath": str(spec), "parameters": {}}, "INVALID_ARGUMENT"
        )
        outside = {"input": "/etc/passwd", "output": str(base / "o")}
        refused({"jobName": "x", "containerSpecGcsPath": str(spec), "parameters": outside}, "PERMISSION_DENIED", 403)
        ok = api.client.post(
            path,
            json={
                "validateOnly": True,
                "launchParameter": {
                    "jobName": "x",
                    "containerSpecGcsPath": str(spec),
                    "parameters": {"input": str(base / "in.txt"), "output": str(base / "o")},
                },
            },
        )
        assert ok.status_code == 200 and ok.json() == {}
    assert api.all_jobs() == []


def test_built_in_templates_run_on_local_files(served, project):
    srv, base, _ = served
    api = Api(srv.url, project)
    data = base / "builtin"
    (data / "csv").mkdir(parents=True)
    (data / "words.txt").write_text("the cat and the hat\nThe end\n")
    (data / "shout_fn.py").write_text("def shout(line):\n    return None if line.startswith('#') else line.upper()\n")
    (data / "lines.txt").write_text("# a comment\nhello\nworld\n")
    (data / "csv" / "a.csv").write_text('name,city\nann,"Paris, FR"\n')
    (data / "csv" / "b.csv").write_text("name,city\nbob,Oslo\n")
    (data / "plain").mkdir()
    originals = {"one.txt": b"one\n" * 1000, "two.bin": bytes(range(256)) * 50}
    for name, content in originals.items():
        (data / "plain" / name).write_bytes(content)

    described = beamport_command(
        "templates",
        "describe",
        "--gcs-location",
        "builtin://Word_Count",
        "--endpoint",
        srv.url,
        "--project",
        project,
        "--format",
        "json",
    )
    assert [p["name"] for p in json.loads(described.stdout)["metadata"]["parameters"]] == ["inputFile", "output"]

    launches = {
        "Word_Count": {"inputFile": str(data / "words.txt"), "output": str(data / "counts")},
        "Text_Transform_Python_UDF": {
            "inputFilePattern": str(data / "lines.txt"),
            "outputPrefix": str(data / "udf"),
            "pythonUdfFilePath": str(data / "shout_fn.py"),
            "pythonUdfFunctionName": "shout",
        },
        "CSV_to_JSONL": {"inputFilePattern": str(data / "csv" / "*.csv"), "outputPrefix": str(data / "rows")},
        "Bulk_Compress_Files": {
            "inputFilePattern": str(data / "plain" / "*"),
            "outputDirectory": str(data / "zipped"),
            "compression": "GZIP",
        },
    }
    # An input that matches no file fails the job, naming the pattern (not DONE with an empty output).
    nothing = str(data / "no-such-*.txt")
    launched = beamport_command(
        "templates",
        "run",
        "wc-nothing",
        "--gcs-location",
        "builtin://Word_Count",
        "--parameters",
        f"inputFile={nothing},output={data / 'nothing'}",
        "--endpoint",
        srv.url,
        "--project",
        project,
        "--format",
        "json",
    )
    ids = {"nothing": json.loads(launched.stdout)["id"]}
    for name, parameters in launches.items():
        pairs = ",".join(f"{k}={v}" for k, v in parameters.items() if "," not in v)
        done = beamport_command(
            "templates",
            "run",
            name.lower().replace("_", "-"),
            "--gcs-location",
            f"builtin://{name}",
            "--parameters",
            pairs,
            "--endpoint",
            srv.url,
            "--project",
            project,
            "--format",
            "json",
        )
        ids[name] = json.loads(done.stdout)["id"]
    for name, job_id in ids.items():
        final = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
        if name == "nothing":
            assert final["currentState"] == "JOB_STATE_FAILED", texts(api, job_id)
            errors = api.messages(job_id, minimumImportance="JOB_MESSAGE_ERROR").json()["jobMessages"]
            assert any(f"No files matched spec: {nothing}" in m["messageText"] for m in errors), errors
            continue
        assert final["currentState"] == "JOB_STATE_DONE", (name, texts(api, job_id))

    # Every job reports its initial worker count as an autoscaling event, as Dataflow does (Airflow's
    # DataflowJobAutoScalingEventTrigger waits for one): a Word_Count that names no count runs on one worker.
    initial = {
        "currentNumWorkers": "0",
        "targetNumWorkers": "1",
        "eventType": "TARGET_NUM_WORKERS_CHANGED",
        "description": {"messageText": "Starting the job's work on 1 worker(s)."},
        "workerPool": "pool-0",
    }
    listed = (
        discovery_client(srv.url)
        .projects()
        .locations()
        .jobs()
        .messages()
        .list(projectId=project, location="us-central1", jobId=ids["Word_Count"])
        .execute()
    )
    (event,) = listed["autoscalingEvents"]
    assert {k: v for k, v in event.items() if k != "time"} == initial
    job = api.get(ids["Word_Count"]).json()
    when = datetime.fromisoformat
    assert when(job["startTime"]) <= when(event["time"]) <= when(job["currentStateTime"])  # started, then DONE

    assert read_output(data / "counts") == sorted(["the: 2", "cat: 1", "and: 1", "hat: 1", "The: 1", "end: 1"])
    assert read_output(data / "udf") == ["HELLO", "WORLD"]
    rows = [json.loads(line) for line in read_output(data / "rows")]
    assert sorted(rows, key=lambda r: r["name"]) == [
        {"city": "Paris, FR", "name": "ann"},
        {"city": "Oslo", "name": "bob"},
    ]
    assert sorted(p.name for p in (data / "zipped").iterdir()) == ["one.txt.gz", "two.bin.gz"]

    # ... and back: decompressed copies equal the originals.
    job = (
        discovery_client(srv.url)
        .projects()
        .locations()
        .templates()
        .launch(
            projectId=project,
            location="us-central1",
            gcsPath="builtin://Bulk_Decompress_Files",
            body={
                "jobName": "unzip",
                "parameters": {
                    "inputFilePattern": str(data / "zipped" / "*.gz"),
                    "outputDirectory": str(data / "unzipped"),
                },
            },
        )
        .execute()["job"]
    )
    final = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
    assert final["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert {p.name: p.read_bytes() for p in (data / "unzipped").iterdir()} == originals

    missing = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/templates:launch",
        params={"gcsPath": "builtin://Nope"},
        json={"jobName": "x"},
    )
    assert missing.status_code == 404 and "Word_Count" in missing.json()["error"]["message"]


def test_templates_are_read_from_file_urls_and_gcs(served, project, tmp_path, monkeypatch):
    srv, base, template = served
    api = Api(srv.url, project)
    path = f"/v1b3/projects/{project}/locations/us-central1/templates:launch"
    good = {"input": str(base / "in.txt"), "output": str(base / "gcs" / "out")}
    checked = api.client.post(
        path,
        params={"gcsPath": f"file://{template}", "validateOnly": "true"},
        json={"jobName": "by-url", "parameters": good},
    )
    assert checked.status_code == 200 and checked.json() == {}

    # gs://, through a GCS emulator, for a server started with STORAGE_EMULATOR_HOST.
    from conftest import free_port
    from gcp_storage_emulator import server as emulator
    from google.cloud import storage

    port = free_port()
    gcs = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket="templates")
    gcs.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    other = Server(tmp_path / "data", extra_args=("--allow-path", str(base), "--workers", "1")).start()
    try:
        bucket = storage.Client.create_anonymous_client().bucket("templates")
        bucket.blob("greeter").upload_from_filename(str(template))
        bucket.blob("greeter_metadata").upload_from_filename(f"{template}_metadata")
        other_api = Api(other.url, project)
        described = other_api.client.get(
            f"/v1b3/projects/{project}/locations/us-central1/templates:get",
            params={"gcsPath": "gs://templates/greeter"},
        ).json()
        assert described.get("metadata", {}).get("name") == "Greeter", described
        launched = other_api.client.post(
            path, params={"gcsPath": "gs://templates/greeter"}, json={"jobName": "from-gcs", "parameters": good}
        )
        assert launched.status_code == 200, launched.text
        job_id = launched.json()["job"]["id"]
        done = wait_state(other_api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
        assert done["currentState"] == "JOB_STATE_DONE", texts(other_api, job_id)
        assert read_output(base / "gcs" / "out") == ["hello there", "hello world"]
        missing = other_api.client.post(path, params={"gcsPath": "gs://templates/none"}, json={"jobName": "x"})
        assert missing.status_code == 404
    finally:
        other.stop()
        gcs.stop()
