"""The worker registry: workers, their CPU samples and lifecycle events; work item failures.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.add_column(sa.Column("failures", sa.Text, nullable=False, server_default="[]"))
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(256), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("container_start_us", sa.BigInteger, nullable=True),
        sa.Column("vm_startup_us", sa.BigInteger, nullable=True),
        sa.Column("first_seen_us", sa.BigInteger, nullable=False),
        sa.Column("last_seen_us", sa.BigInteger, nullable=False),
        sa.Column("last_health_us", sa.BigInteger, nullable=True),
        sa.Column("health", sa.Text, nullable=False, server_default="{}"),
        sa.Column("report_interval_us", sa.BigInteger, nullable=False),
        sa.Column("cpu_total_ms", sa.BigInteger, nullable=True),
        sa.Column("cpu_rate", sa.Float, nullable=True),
        sa.Column("cpu_us", sa.BigInteger, nullable=True),
        sa.Column("work_item_id", sa.BigInteger, nullable=True),
        sa.Column("stacks_request_us", sa.BigInteger, nullable=True),
        sa.Column("stacks_us", sa.BigInteger, nullable=True),
        sa.Column("stacks", sa.Text, nullable=False, server_default="[]"),
    )
    op.create_index("ix_workers_job", "workers", ["job_id"])
    op.create_index("ix_workers_state", "workers", ["state"])
    op.create_table(
        "worker_cpu_samples",
        sa.Column("worker_id", sa.String(256), primary_key=True),
        sa.Column("time_us", sa.BigInteger, primary_key=True),
        sa.Column("total_ms", sa.BigInteger, nullable=False),
        sa.Column("rate", sa.Float, nullable=False),
    )
    op.create_table(
        "worker_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_worker_events_worker_seq", "worker_events", ["worker_id", "seq"])


def downgrade() -> None:
    op.drop_table("worker_events")
    op.drop_table("worker_cpu_samples")
    op.drop_table("workers")
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("failures")
