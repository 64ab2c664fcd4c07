"""MetricsV1Beta3 (getJobMetrics, getJobExecutionDetails, getStageExecutionDetails) -> ExecutionDetails, as
http/execution.py calls it."""

from __future__ import annotations

from google.cloud import dataflow_v1beta3 as dataflow

from beamport.grpc.rpc import Method, job_id, location, project, timestamp_us


def get_job_metrics(services, request, caller) -> dict:
    return services.execution_details.get_metrics(
        project(request), location(request), job_id(request), timestamp_us(request, "start_time")
    )


def get_job_execution_details(services, request, caller) -> dict:
    return services.execution_details.execution_details(project(request), location(request), job_id(request))


def get_stage_execution_details(services, request, caller) -> dict:
    return services.execution_details.stage_execution_details(
        project(request), location(request), job_id(request), request.stage_id
    )


METRICS = "MetricsV1Beta3"
METRICS_METHODS = [
    Method(
        "GetJobMetrics", dataflow.GetJobMetricsRequest, dataflow.JobMetrics, "dataflow.metrics.get", get_job_metrics
    ),
    Method(
        "GetJobExecutionDetails",
        dataflow.GetJobExecutionDetailsRequest,
        dataflow.JobExecutionDetails,
        "dataflow.jobs.get",
        get_job_execution_details,
    ),
    Method(
        "GetStageExecutionDetails",
        dataflow.GetStageExecutionDetailsRequest,
        dataflow.StageExecutionDetails,
        "dataflow.jobs.get",
        get_stage_execution_details,
    ),
]
