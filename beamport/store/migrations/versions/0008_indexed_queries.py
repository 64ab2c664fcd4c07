"""Indexes (and the columns they need) so that queries filter, count and page in SQL.

- jobs.created_from_snapshot_id: the document's createdFromSnapshotId, instead of a text search of the summary;
  jobs:aggregated by state and by name.
- work_items.project_id, location: the job's, copied; partial indexes of waiting and held work (the lease's
  choice, busy workers); the index of every item by state goes.
- job_messages: where a time range starts, and pages of a minimum importance.

On a large database this takes a while once (it reads every job, work item and message): about 3 minutes for
1,000,000 jobs and 10,000,000 messages on SQLite (benchmarks/README.md).

Revision ID: 0008
Revises: 0007
"""

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PENDING_ONLY = "state = 'PENDING'"
LEASED_ONLY = "state = 'LEASED'"
FROM_SNAPSHOT = "created_from_snapshot_id <> ''"


def _partial(condition: str) -> dict:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    # Columns with a default are added in place (SQLite's ALTER TABLE ADD COLUMN; PostgreSQL does not rewrite).
    op.add_column("jobs", sa.Column("created_from_snapshot_id", sa.String(128), nullable=False, server_default=""))
    connection = op.get_bind()
    # The summary is compact JSON (orjson): the field appears as below in the few jobs that have it.
    found = connection.execute(
        sa.text("SELECT id, summary FROM jobs WHERE summary LIKE :needle"), {"needle": '%"createdFromSnapshotId":%'}
    ).all()
    for job_id, summary in found:
        snapshot_id = orjson.loads(summary).get("createdFromSnapshotId") or ""
        connection.execute(
            sa.text("UPDATE jobs SET created_from_snapshot_id = :snapshot WHERE id = :id"),
            {"snapshot": snapshot_id, "id": job_id},
        )
    op.create_index("ix_jobs_project_active_seq", "jobs", ["project_id", "active", "seq"])
    op.create_index("ix_jobs_project_name_seq", "jobs", ["project_id", "name", "seq"])
    op.create_index(
        "ix_jobs_from_snapshot", "jobs", ["project_id", "created_from_snapshot_id"], **_partial(FROM_SNAPSHOT)
    )

    op.add_column("work_items", sa.Column("project_id", sa.String(128), nullable=False, server_default=""))
    op.add_column("work_items", sa.Column("location", sa.String(64), nullable=False, server_default=""))
    connection.execute(
        sa.text(
            "UPDATE work_items SET project_id = (SELECT jobs.project_id FROM jobs WHERE jobs.id = work_items.job_id), "
            "location = (SELECT jobs.location FROM jobs WHERE jobs.id = work_items.job_id) "
            "WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = work_items.job_id)"
        )
    )
    op.drop_index("ix_work_items_state", "work_items")
    op.create_index("ix_work_items_pending", "work_items", ["project_id", "id"], **_partial(PENDING_ONLY))
    op.create_index(
        "ix_work_items_pending_location", "work_items", ["location", "project_id", "id"], **_partial(PENDING_ONLY)
    )
    op.create_index("ix_work_items_leased", "work_items", ["project_id"], **_partial(LEASED_ONLY))
    op.create_index("ix_work_items_leased_worker", "work_items", ["worker_id"], **_partial(LEASED_ONLY))

    op.create_index("ix_job_messages_job_time", "job_messages", ["job_id", "time_us", "seq"])
    op.create_index("ix_job_messages_job_importance_seq", "job_messages", ["job_id", "importance_rank", "seq"])


def downgrade() -> None:
    op.drop_index("ix_job_messages_job_importance_seq", "job_messages")
    op.drop_index("ix_job_messages_job_time", "job_messages")
    for name in ("ix_work_items_leased_worker", "ix_work_items_leased", "ix_work_items_pending_location"):
        op.drop_index(name, "work_items")
    op.drop_index("ix_work_items_pending", "work_items")
    op.create_index("ix_work_items_state", "work_items", ["state", "id"])
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("location")
        batch.drop_column("project_id")
    for name in ("ix_jobs_from_snapshot", "ix_jobs_project_name_seq", "ix_jobs_project_active_seq"):
        op.drop_index(name, "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("created_from_snapshot_id")
