"""Dataflow's job model: states, views, ids and names, and the enum types used on the wire."""

from __future__ import annotations

import re
import secrets
import time

from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import descriptor_pool

from beamport.errors import invalid_argument

# The job states are declared, with their transitions, in beamport.job_states; the services name them model.X too.
from beamport.job_states import (  # noqa: F401
    CANCELLED,
    CANCELLING,
    DONE,
    DRAINED,
    DRAINING,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    STOPPED,
    UPDATED,
)

JobPb = dataflow.Job.pb()

_pool = descriptor_pool.Default()
JobState = _pool.FindEnumTypeByName("google.dataflow.v1beta3.JobState")
JobView = _pool.FindEnumTypeByName("google.dataflow.v1beta3.JobView")
JobType = _pool.FindEnumTypeByName("google.dataflow.v1beta3.JobType")
JobMessageImportance = _pool.FindEnumTypeByName("google.dataflow.v1beta3.JobMessageImportance")
ListJobsFilter = dataflow.ListJobsRequest.pb().DESCRIPTOR.enum_types_by_name["Filter"]

BATCH = "JOB_TYPE_BATCH"
STREAMING = "JOB_TYPE_STREAMING"

VIEW_UNKNOWN = JobView.values_by_name["JOB_VIEW_UNKNOWN"].number
VIEW_SUMMARY = JobView.values_by_name["JOB_VIEW_SUMMARY"].number
VIEW_ALL = JobView.values_by_name["JOB_VIEW_ALL"].number
VIEW_DESCRIPTION = JobView.values_by_name["JOB_VIEW_DESCRIPTION"].number

# Message importances in increasing order; the enum's numbers are not in this order.
IMPORTANCE_ORDER = (
    "JOB_MESSAGE_DEBUG",
    "JOB_MESSAGE_DETAILED",
    "JOB_MESSAGE_BASIC",
    "JOB_MESSAGE_WARNING",
    "JOB_MESSAGE_ERROR",
)
IMPORTANCE_RANK = {name: rank for rank, name in enumerate(IMPORTANCE_ORDER)}

# Top-level Job fields that JOB_VIEW_SUMMARY shows; the rest (environment,
# steps, pipeline description, execution info...) is the job's detail.
SUMMARY_FIELDS = frozenset(
    {
        "id",
        "projectId",
        "name",
        "type",
        "currentState",
        "currentStateTime",
        "requestedState",
        "createTime",
        "startTime",
        "location",
        "labels",
        "jobMetadata",
        "clientRequestId",
        "replaceJobId",
        "replacedByJobId",
        "createdFromSnapshotId",
        "stageStates",
        "satisfiesPzs",
        "satisfiesPzi",
        "runtimeUpdatableParams",
        "serviceResources",
        "pausable",
    }
)

JOB_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
JOB_NAME_MAX = 1024

# The names a request gives as parameters (a path's or a gRPC request's fields), checked by every transport alike.
DEFAULT_LOCATION = "us-central1"  # what a request that names no location means (the location-less twins)
PROJECT_ID_RE = re.compile(r"[a-z0-9][-a-z0-9.:_]{0,127}\Z")
LOCATION_RE = re.compile(r"[a-z][-a-z0-9]{0,62}\Z")
RESOURCE_ID_RE = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_]{0,127}\Z")  # job, snapshot ids


def check_project(project: str) -> str:
    if not PROJECT_ID_RE.match(project):
        raise invalid_argument(f"Invalid project id {project!r}")
    return project


def check_location(location: str) -> str:
    if not LOCATION_RE.match(location):
        raise invalid_argument(f"Invalid location {location!r}")
    return location


def check_id(name: str, value: str) -> str:
    """An id (`name`: the parameter that carries it, for the message)."""
    if not RESOURCE_ID_RE.match(value):
        raise invalid_argument(f"Invalid {name} {value!r}")
    return value


def new_job_id(now_us: int) -> str:
    """Dataflow's id format: UTC creation time, then a random 63-bit number."""
    stamp = time.strftime("%Y-%m-%d_%H_%M_%S", time.gmtime(now_us // 1_000_000))
    return f"{stamp}-{secrets.randbits(63)}"


def new_message_id() -> str:
    return str(secrets.randbits(63))


def split_document(doc: dict) -> tuple[dict, dict]:
    summary = {k: v for k, v in doc.items() if k in SUMMARY_FIELDS}
    detail = {k: v for k, v in doc.items() if k not in SUMMARY_FIELDS}
    return summary, detail


def render_view(summary: dict, detail: dict | None, view: int) -> dict:
    """The job as `view` shows it. JOB_VIEW_UNKNOWN means summary, as Dataflow documents."""
    if view == VIEW_ALL and detail:
        return {**summary, **detail}
    if view == VIEW_DESCRIPTION and detail:
        described = dict(summary)
        for key in ("environment", "pipelineDescription", "stepsLocation"):
            if key in detail:
                described[key] = detail[key]
        if "steps" in detail:
            described["steps"] = [{k: s[k] for k in ("kind", "name") if k in s} for s in detail["steps"]]
        return described
    return summary
