"""A job that waits to take over from the active job it updates (its state being saved) shares that job's name.

- jobs.replacing_job_id: while an update that carries state is underway, the id of the job it replaces ("" once
  the swap is done, and for every other job).
- uq_jobs_active_name: one active job per (project, region, name) among the jobs that hold their name: an update
  underway does not hold it until the swap.

Revision ID: 0009
Revises: 0008
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HOLDS_NAME: dict[str, Any] = {
    "sqlite_where": sa.text("active = 1 AND replacing_job_id = ''"),
    "postgresql_where": sa.text("active AND replacing_job_id = ''"),
}
WAS: dict[str, Any] = {"sqlite_where": sa.text("active = 1"), "postgresql_where": sa.text("active")}


def upgrade() -> None:
    op.add_column("jobs", sa.Column("replacing_job_id", sa.String(128), nullable=False, server_default=""))
    op.drop_index("uq_jobs_active_name", "jobs")
    op.create_index("uq_jobs_active_name", "jobs", ["project_id", "location", "name"], unique=True, **HOLDS_NAME)


def downgrade() -> None:
    op.drop_index("uq_jobs_active_name", "jobs")
    op.create_index("uq_jobs_active_name", "jobs", ["project_id", "location", "name"], unique=True, **WAS)
    op.drop_column("jobs", "replacing_job_id")
