"""Autoscaling events: each change of a job's worker count, for messages.list; work item progress.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "autoscaling_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("current_workers", sa.Integer, nullable=False),
        sa.Column("target_workers", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_autoscaling_events_job_seq", "autoscaling_events", ["job_id", "seq"])
    with op.batch_alter_table("work_items") as batch:
        batch.add_column(sa.Column("progress", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("work_items") as batch:
        batch.drop_column("progress")
    op.drop_table("autoscaling_events")
