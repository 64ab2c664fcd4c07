"""Classic templates: written by Beam's DataflowRunner (--template_location), launched with runtime
parameters through google-api-python-client and google-cloud-dataflow-client, run for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Api, Server, discovery_client
from test_running_jobs import PIPELINES, read_output, run, texts, wait_state

pytestmark = pytest.mark.slow

METADATA = {
    "name": "Greeter",
    "description": "Prefixes every line of a text file with a greeting.",
    "parameters": [
        {"name": "input", "label": "Input file", "helpText": "The text to read."},
        {"name": "output", "label": "Output prefix", "helpText": "Where to write."},
        {"name": "greeting", "label": "Greeting", "helpText": "A word.", "isOptional": True,
         "regexes": ["[a-z]+"]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server that runs jobs, and a template (with its metadata) written by DataflowRunner."""
    base = tmp_path_factory.mktemp("templates")
    srv = Server(base / "data", extra_args=("--allow-path", str(base))).start()
    stage = base / "stage"
    stage.mkdir()
    template = base / "greeter"
    run([str(PIPELINES / "template_pipeline.py"), "--runner=DataflowRunner", "--project=p", "--region=us-central1",
         f"--temp_location={stage}", f"--staging_location={stage}", f"--template_location={template}",
         "--dataflow_endpoint=http://localhost:1", "--no_auth"])  # fmt: skip
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
        projectId=project, location="us-central1", gcsPath=str(template),
        body={"jobName": "greet-one", "parameters": {"input": str(base / "in.txt"), "output": str(base / "one" / "out"),
                                                     "greeting": "hi"},
              "environment": {"additionalUserLabels": {"team": "a"}, "machineType": "n1-standard-4"}},
    ).execute()  # fmt: skip
    first = launched["job"]

    from google.cloud import dataflow_v1beta3 as dataflow

    from google.auth.credentials import AnonymousCredentials

    client = dataflow.TemplatesServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options={"api_endpoint": srv.url})  # fmt: skip
    second = client.launch_template(request={
        "project_id": project, "location": "us-central1", "gcs_path": str(template),
        "launch_parameters": {"job_name": "greet-two",
                              "parameters": {"input": str(base / "in.txt"), "output": str(base / "two" / "out")}},
    }).job  # fmt: skip

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
    job = discovery_client(srv.url).projects().locations().templates().create(
        projectId=project, location="us-central1",
        body={"jobName": "greet-created", "gcsPath": str(template),
              "parameters": {"input": str(base / "in.txt"), "output": str(base / "created" / "out"), "greeting": "yo"}},
    ).execute()  # fmt: skip
    assert job["name"] == "greet-created"
    done = wait_state(api, job["id"], {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=120)
    assert done["currentState"] == "JOB_STATE_DONE", texts(api, job["id"])
    assert read_output(base / "created" / "out") == ["yo there", "yo world"]


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

    assert "'input' is required" in refused(str(template), {"jobName": "x", "parameters": {"output": "o"}}, "INVALID_ARGUMENT")
    assert "'greeting'" in refused(str(template), {"jobName": "x", "parameters": {**good, "greeting": "Hi!"}},
                                   "INVALID_ARGUMENT")  # fmt: skip
    assert "'colour' is not a parameter" in refused(str(template), {"jobName": "x", "parameters": {**good, "colour": "red"}},
                                                    "INVALID_ARGUMENT")  # fmt: skip
    assert "jobName" in refused(str(template), {"parameters": good}, "INVALID_ARGUMENT")
    assert "does not exist" in refused(str(base / "missing"), {"jobName": "x"}, "NOT_FOUND", 404)
    (tmp_path / "notes.txt").write_text("not json")
    not_template = base / "notes.txt"
    not_template.write_text("just some notes")
    assert "not a Dataflow template" in refused(str(not_template), {"jobName": "x"}, "INVALID_ARGUMENT")
    (base / "object.json").write_text('{"name": "x"}')
    assert "not a Dataflow template" in refused(str(base / "object.json"), {"jobName": "x"}, "INVALID_ARGUMENT")
    assert "PERMISSION_DENIED" == api.client.post(path, params={"gcsPath": "/etc/passwd"}, json={"jobName": "x"}).json()["error"]["status"]
    # validateOnly checks everything and creates nothing.
    ok = api.client.post(path, params={"gcsPath": str(template), "validateOnly": "true"},
                         json={"jobName": "checked", "parameters": good})  # fmt: skip
    assert ok.status_code == 200 and ok.json() == {}
    assert "'input' is required" in api.client.post(
        path, params={"gcsPath": str(template), "validateOnly": "true"}, json={"jobName": "x", "parameters": {}}
    ).json()["error"]["message"]
    assert api.all_jobs() == []
