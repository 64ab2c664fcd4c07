"""A DAG of Airflow's Dataflow operators and sensors, unmodified, against Beamport (tests/test_airflow.py).

Nothing here knows it talks to Beamport but the connection (its extra carries `api_endpoint` and
`grpc_endpoint`) and Beam's own `dataflow_endpoint` option for the pipelines Airflow runs with DataflowRunner.
The test passes its paths as JSON in BEAMPORT_DAG_SETTINGS.
"""

import json
import os

import pendulum
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import (
    DataflowStartFlexTemplateOperator,
    DataflowStopJobOperator,
    DataflowTemplatedJobStartOperator,
)
from airflow.providers.google.cloud.sensors.dataflow import (
    DataflowJobAutoScalingEventsSensor,
    DataflowJobMessagesSensor,
    DataflowJobMetricsSensor,
    DataflowJobStatusSensor,
)
from airflow.sdk import DAG, BaseOperator

SETTINGS = json.loads(os.environ["BEAMPORT_DAG_SETTINGS"])
DATA = SETTINGS["data"]
WHERE = {"project_id": SETTINGS["project"], "location": "us-central1", "gcp_conn_id": "beamport"}
# Beam's DataflowRunner is pointed at Beamport by its own option (Airflow passes pipeline options through).
BEAM_OPTIONS = {
    "dataflow_endpoint": SETTINGS["dataflow_endpoint"],
    "no_auth": True,
    "temp_location": f"{DATA}/beam-temp",
    "staging_location": f"{DATA}/beam-temp",
}
DATAFLOW_CONFIG = {**WHERE, "poll_sleep": 1}


def text(message: dict) -> str:
    # Deferred sensors get proto-plus dicts (proto field names), poking ones the REST answer (JSON names).
    return message.get("messageText") or message.get("message_text") or ""


def sensors(job: BaseOperator, deferrable: bool = False) -> list[BaseOperator]:
    """Every Dataflow sensor on the job `job` started (each poking, or each deferred to a trigger)."""
    suffix = "_deferred" if deferrable else ""
    common = {
        **WHERE,
        "job_id": f"{{{{ ti.xcom_pull(task_ids='{job.task_id}') }}}}",
        "deferrable": deferrable,
        "poke_interval": 1,
        "poll_interval": 1,
        "timeout": 300,
    }
    return [
        DataflowJobStatusSensor(task_id="status" + suffix, expected_statuses={"JOB_STATE_DONE"}, **common),
        DataflowJobMetricsSensor(
            task_id="metrics" + suffix,
            callback=lambda metrics: any(m["name"]["name"] == "ElementCount" for m in metrics),
            fail_on_terminal_state=False,
            **common,
        ),
        DataflowJobMessagesSensor(
            task_id="messages" + suffix,
            callback=lambda messages: any("Launched from the template" in text(m) for m in messages),
            fail_on_terminal_state=False,
            **common,
        ),
        DataflowJobAutoScalingEventsSensor(
            task_id="autoscaling" + suffix,
            callback=lambda events: len(events) > 0,
            fail_on_terminal_state=False,
            **common,
        ),
    ]


def streaming_job(task_id: str, name: str) -> BeamRunPythonPipelineOperator:
    """A streaming job on Beamport's Prism engine; the operator returns once it runs."""
    return BeamRunPythonPipelineOperator(
        task_id=task_id,
        runner="DataflowRunner",
        py_file=SETTINGS["hourly_counts"],
        py_interpreter=SETTINGS["python"],
        pipeline_options={**BEAM_OPTIONS, "streaming": True, "log": f"{DATA}/{name}.log", "out": f"{DATA}/{name}.out"},
        dataflow_config={**DATAFLOW_CONFIG, "job_name": name},
    )


with DAG("beamport_dataflow", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False) as dag:
    template_sync = DataflowTemplatedJobStartOperator(
        task_id="template_sync",
        template="builtin://Word_Count",
        parameters={"inputFile": f"{DATA}/words.txt", "output": f"{DATA}/sync/counts"},
        **DATAFLOW_CONFIG,
    )
    flex = DataflowStartFlexTemplateOperator(
        task_id="flex",
        body={
            # Proto field names (the operator reads `launch_parameter` first; JSON names work as well).
            "launch_parameter": {
                "job_name": "flex-greet",
                "container_spec_gcs_path": SETTINGS["flex_spec"],
                "parameters": {"input": f"{DATA}/words.txt", "output": f"{DATA}/flex/out", "greeting": "howdy"},
            }
        },
        **WHERE,
        poll_sleep=1,
    )
    beam_batch = BeamRunPythonPipelineOperator(
        task_id="beam_batch",
        runner="DataflowRunner",
        py_file=SETTINGS["greeter"],
        py_interpreter=SETTINGS["python"],
        pipeline_options={**BEAM_OPTIONS, "input": f"{DATA}/words.txt", "output": f"{DATA}/beam/out", "greeting": "hi"},
        dataflow_config={**DATAFLOW_CONFIG, "job_name": "beam-batch"},
    )
    to_cancel = streaming_job("streaming_to_cancel", "to-cancel")
    to_drain = streaming_job("streaming_to_drain", "to-drain")
    cancel = DataflowStopJobOperator(
        task_id="cancel",
        job_id="{{ ti.xcom_pull(task_ids='streaming_to_cancel')['dataflow_job_id'] }}",
        drain_pipeline=False,
        poll_sleep=1,
        **WHERE,
    )
    drain = DataflowStopJobOperator(
        task_id="drain",
        job_id="{{ ti.xcom_pull(task_ids='streaming_to_drain')['dataflow_job_id'] }}",
        drain_pipeline=True,
        poll_sleep=1,
        **WHERE,
    )

    template_deferred = DataflowTemplatedJobStartOperator(
        task_id="template_deferred",
        template="builtin://Word_Count",
        parameters={"inputFile": f"{DATA}/words.txt", "output": f"{DATA}/deferred/counts"},
        deferrable=True,
        **DATAFLOW_CONFIG,
    )

    # The batch jobs first: a streaming job holds a worker until it is stopped.
    batch = [template_sync, template_deferred, flex, beam_batch]
    template_sync >> sensors(template_sync)
    template_deferred >> sensors(template_deferred, deferrable=True)
    batch >> to_cancel >> cancel
    batch >> to_drain >> drain
