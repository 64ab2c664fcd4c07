"""Work items, job metrics and stage runs: what running jobs need.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_jobs_active_seq", "jobs", ["active", "seq"])
    op.create_table(
        "work_items",
        sa.Column("id", SeqType, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(256), nullable=True),
        sa.Column("lease_expire_us", sa.BigInteger, nullable=True),
        sa.Column("next_report_index", sa.BigInteger, nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=True),
        sa.Column("end_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_work_items_job", "work_items", ["job_id"])
    op.create_index("ix_work_items_state", "work_items", ["state", "id"])
    # Batch jobs accepted before jobs could run get their work now.
    op.execute(
        "INSERT INTO work_items (job_id, state, attempt, next_report_index, version) "
        "SELECT id, 'PENDING', 1, 1, 1 FROM jobs WHERE active AND summary NOT LIKE '%JOB_TYPE_STREAMING%'"
    )
    op.create_table(
        "job_metrics",
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("metric_key", sa.String(2048), primary_key=True),
        sa.Column("update_us", sa.BigInteger, nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_table(
        "stage_runs",
        sa.Column("job_id", sa.String(128), primary_key=True),
        sa.Column("stage", sa.String(1024), primary_key=True),
        sa.Column("state", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=True),
        sa.Column("end_us", sa.BigInteger, nullable=True),
        sa.Column("worker_id", sa.String(256), nullable=True),
        sa.Column("work_item_id", sa.BigInteger, nullable=True),
        sa.Column("ordinal", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stage_runs")
    op.drop_table("job_metrics")
    op.drop_table("work_items")
    op.drop_index("ix_jobs_active_seq", "jobs")
