"""The same create / get / list / update / messages scenarios through each real client library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import discovery_client, gapic_clients
from google.api_core import exceptions as gexc
from googleapiclient.errors import HttpError


def test_google_api_python_client(server, project, region):
    jobs = discovery_client(server.url).projects().locations().jobs()

    created = jobs.create(
        projectId=project,
        location=region,
        body={"name": "disc-job", "type": "JOB_TYPE_STREAMING", "labels": {"team": "data"}},
    ).execute()
    job_id = created["id"]
    assert created["currentState"] == "JOB_STATE_PENDING"
    assert created["projectId"] == project and created["location"] == region

    got = jobs.get(projectId=project, location=region, jobId=job_id, view="JOB_VIEW_ALL").execute()
    assert got["name"] == "disc-job" and got["type"] == "JOB_TYPE_STREAMING"
    assert got["labels"] == {"team": "data"}

    listed = jobs.list(projectId=project, location=region, filter="ACTIVE").execute()
    assert [j["id"] for j in listed["jobs"]] == [job_id]

    updated = jobs.update(
        projectId=project, location=region, jobId=job_id, body={"labels": {"team": "ml"}}, updateMask="labels"
    ).execute()
    assert updated["labels"] == {"team": "ml"}

    cancelled = jobs.update(
        projectId=project, location=region, jobId=job_id, body={"requestedState": "JOB_STATE_CANCELLED"}
    ).execute()
    assert cancelled["currentState"] == "JOB_STATE_CANCELLED"

    with pytest.raises(HttpError) as refused:
        jobs.update(
            projectId=project, location=region, jobId=job_id, body={"requestedState": "JOB_STATE_CANCELLED"}
        ).execute()
    assert refused.value.resp.status == 400 and "terminal state" in str(refused.value)

    messages = jobs.messages().list(projectId=project, location=region, jobId=job_id).execute()["jobMessages"]
    assert any("Cancel request" in m["messageText"] for m in messages)
    basic = (
        jobs.messages()
        .list(projectId=project, location=region, jobId=job_id, minimumImportance="JOB_MESSAGE_WARNING")
        .execute()["jobMessages"]
    )
    assert {m["messageImportance"] for m in basic} == {"JOB_MESSAGE_WARNING"}

    metrics = jobs.getMetrics(projectId=project, location=region, jobId=job_id).execute()
    assert "metricTime" in metrics and metrics["metrics"] == []  # even with none: Airflow reads it

    # The location-less twins mean us-central1.
    twin = discovery_client(server.url).projects().jobs()
    assert twin.get(projectId=project, jobId=job_id).execute()["id"] == job_id
    assert [j["id"] for j in twin.list(projectId=project).execute()["jobs"]] == [job_id]
    assert [j["id"] for j in twin.aggregated(projectId=project).execute()["jobs"]] == [job_id]

    with pytest.raises(HttpError) as missing:
        jobs.get(projectId=project, location=region, jobId="2020-01-01_00_00_00-1").execute()
    assert missing.value.resp.status == 404


def test_google_cloud_dataflow_client(server, project, region):
    from google.cloud import dataflow_v1beta3 as dataflow

    jobs, messages, metrics = gapic_clients(server.url)
    created = jobs.create_job(
        request=dataflow.CreateJobRequest(
            project_id=project,
            location=region,
            job=dataflow.Job(name="gapic-job", type_=dataflow.JobType.JOB_TYPE_BATCH, client_request_id="req-1"),
        )
    )
    assert created.current_state == dataflow.JobState.JOB_STATE_PENDING
    assert created.client_request_id == "req-1"

    got = jobs.get_job(
        request=dataflow.GetJobRequest(
            project_id=project, location=region, job_id=created.id, view=dataflow.JobView.JOB_VIEW_ALL
        )
    )
    assert got.name == "gapic-job" and got.type_ == dataflow.JobType.JOB_TYPE_BATCH
    assert got.create_time.year >= 2024

    listed = list(jobs.list_jobs(request=dataflow.ListJobsRequest(project_id=project, location=region)))
    assert [j.id for j in listed] == [created.id]
    aggregated = list(jobs.aggregated_list_jobs(request=dataflow.ListJobsRequest(project_id=project)))
    assert [j.id for j in aggregated] == [created.id]

    with pytest.raises(gexc.BadRequest) as drain:
        jobs.update_job(
            request=dataflow.UpdateJobRequest(
                project_id=project,
                location=region,
                job_id=created.id,
                job=dataflow.Job(requested_state=dataflow.JobState.JOB_STATE_DRAINED),
            )
        )
    assert "batch jobs cannot be drained" in str(drain.value)

    cancelled = jobs.update_job(
        request=dataflow.UpdateJobRequest(
            project_id=project,
            location=region,
            job_id=created.id,
            job=dataflow.Job(requested_state=dataflow.JobState.JOB_STATE_CANCELLED),
        )
    )
    assert cancelled.current_state == dataflow.JobState.JOB_STATE_CANCELLED

    texts = [
        m.message_text
        for m in messages.list_job_messages(
            request=dataflow.ListJobMessagesRequest(project_id=project, location=region, job_id=created.id)
        )
    ]
    assert any("Cancel request" in t for t in texts)

    result = metrics.get_job_metrics(
        request=dataflow.GetJobMetricsRequest(project_id=project, location=region, job_id=created.id)
    )
    assert list(result.metrics) == [] and result.metric_time.year >= 2024

    with pytest.raises(gexc.NotFound):
        jobs.get_job(request=dataflow.GetJobRequest(project_id=project, location=region, job_id="no-such-job"))

    # Only streaming jobs can be snapshotted (tests/test_snapshots.py has the rest).
    with pytest.raises(gexc.BadRequest) as snapshot:
        jobs.snapshot_job(request=dataflow.SnapshotJobRequest(project_id=project, location=region, job_id=created.id))
    assert "is a batch job" in str(snapshot.value)


BEAM_SUBMIT = textwrap.dedent(
    """
    import sys
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    endpoint, project, temp, job_name = sys.argv[1:5]
    options = PipelineOptions([
        "--runner=DataflowRunner", f"--dataflow_endpoint={endpoint}", "--no_auth",
        f"--project={project}", "--region=us-central1", f"--temp_location={temp}",
        f"--staging_location={temp}", f"--job_name={job_name}",
    ])
    pipeline = beam.Pipeline(options=options)
    (pipeline | beam.Create(["a b", "b c"]) | beam.FlatMap(str.split) | beam.combiners.Count.PerElement())
    result = pipeline.run()
    print("JOB_ID", result.job_id())
    print("STATE", result.state)
    """
)


def _beam_submit(server, project, tmp_path, job_name):
    script = tmp_path / "submit.py"
    script.write_text(BEAM_SUBMIT)
    # Beam treats the endpoint as local (local staging, REST transport) only when its host says "localhost".
    endpoint = server.url.replace("127.0.0.1", "localhost")
    return subprocess.run(
        [sys.executable, str(script), endpoint, project, str(tmp_path), job_name],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_beam_dataflow_runner_submission(server, project, tmp_path, api):
    done = _beam_submit(server, project, tmp_path, "beam-job")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("JOB_ID ")[1].split()[0]
    assert "STATE PENDING" in done.stdout

    job = api.get(job_id, view="JOB_VIEW_ALL").json()
    assert job["name"] == "beam-job" and job["type"] == "JOB_TYPE_BATCH"
    assert job["environment"]["version"]["job_type"] == "FNAPI_BATCH"
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["pipelineUrl"].endswith("pipeline.pb")
    assert (tmp_path / "pipeline.pb").exists()
    assert [j["id"] for j in api.all_jobs()] == [job_id]

    # A second submission with the same name while the first is active: Beam's own "already exists" error.
    again = _beam_submit(server, project, tmp_path, "beam-job")
    assert again.returncode != 0
    assert "DataflowJobAlreadyExistsError" in again.stderr and job_id in again.stderr
    assert [j["id"] for j in api.all_jobs()] == [job_id]

    # Once the first is cancelled, the name is free again.
    assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    third = _beam_submit(server, project, tmp_path, "beam-job")
    assert third.returncode == 0, third.stderr
    assert len(api.all_jobs()) == 2
