"""SnapshotsV1Beta3 (get, delete, list) -> SnapshotService, as http/snapshots.py calls it."""

from __future__ import annotations

from google.cloud import dataflow_v1beta3 as dataflow

from beamport.grpc.rpc import Method, location, project
from beamport.service import model


def _snapshot_id(request) -> str:
    return model.check_id("snapshotId", request.snapshot_id)


def get_snapshot(services, request, caller) -> dict:
    return services.snapshots.get_snapshot(project(request), location(request), _snapshot_id(request))


def delete_snapshot(services, request, caller) -> dict:
    return services.snapshots.delete_snapshot(project(request), location(request), _snapshot_id(request))


def list_snapshots(services, request, caller) -> dict:
    """The location's snapshots, or one job's."""
    job = model.check_id("jobId", request.job_id) if request.job_id else None
    return services.snapshots.list_snapshots(project(request), location(request), job)


SNAPSHOTS = "SnapshotsV1Beta3"
SNAPSHOTS_METHODS = [
    Method("GetSnapshot", dataflow.GetSnapshotRequest, dataflow.Snapshot, "dataflow.snapshots.get", get_snapshot),
    Method(
        "DeleteSnapshot",
        dataflow.DeleteSnapshotRequest,
        dataflow.DeleteSnapshotResponse,
        "dataflow.snapshots.delete",
        delete_snapshot,
        changes_state=True,
    ),
    Method(
        "ListSnapshots",
        dataflow.ListSnapshotsRequest,
        dataflow.ListSnapshotsResponse,
        "dataflow.snapshots.list",
        list_snapshots,
    ),
]
