"""Roles and the permissions they grant, named as Google Cloud names them (Dataflow's predefined roles).

A few permissions are Beamport's own, for what Dataflow has no call for (its worker registry, its SQL table
catalog, a job's kept pipeline); they follow the same `service.resource.verb` form.
"""

from __future__ import annotations

VIEWER = "roles/dataflow.viewer"
DEVELOPER = "roles/dataflow.developer"
ADMIN = "roles/dataflow.admin"
WORKER = "roles/dataflow.worker"

_VIEW = frozenset(
    {
        "dataflow.jobs.get",
        "dataflow.jobs.list",
        "dataflow.messages.list",
        "dataflow.metrics.get",
        "dataflow.snapshots.get",
        "dataflow.snapshots.list",
        "dataflow.sqlTables.get",
        "dataflow.sqlTables.list",
        "dataflow.workers.get",
        "dataflow.workers.list",
    }
)
_DEVELOP = _VIEW | {
    "dataflow.jobs.create",
    "dataflow.jobs.update",
    "dataflow.jobs.cancel",
    "dataflow.jobs.snapshot",
    "dataflow.jobs.debug",
    "dataflow.jobs.getPipeline",
    "dataflow.snapshots.delete",
    "dataflow.templates.get",
    "dataflow.sql.validate",
    "dataflow.sqlTables.create",
    "dataflow.sqlTables.delete",
}
_WORK = frozenset(
    {
        "dataflow.workItems.lease",
        "dataflow.workItems.update",
        "dataflow.workItems.sendMessage",
        "dataflow.jobs.get",
        "dataflow.jobs.getPipeline",
    }
)
_ADMINISTER = (
    _DEVELOP
    | _WORK
    | {
        "iam.serviceAccounts.create",
        "iam.serviceAccounts.get",
        "iam.serviceAccounts.list",
        "iam.serviceAccounts.delete",
        "iam.serviceAccountKeys.create",
        "iam.serviceAccountKeys.list",
        "iam.serviceAccountKeys.delete",
        "resourcemanager.projects.getIamPolicy",
        "resourcemanager.projects.setIamPolicy",
        "logging.logEntries.list",
    }
)

PERMISSIONS: dict[str, frozenset[str]] = {
    VIEWER: frozenset(_VIEW),
    DEVELOPER: frozenset(_DEVELOP),
    ADMIN: frozenset(_ADMINISTER),
    WORKER: _WORK,
}
