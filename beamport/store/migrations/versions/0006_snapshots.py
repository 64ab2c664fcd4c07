"""Snapshots: a streaming job's state saved by its engine (Dataflow's snapshots resource).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("source_job_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.Column("ttl_us", sa.BigInteger, nullable=False),
        sa.Column("expire_us", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("snapshot_sources", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("disk_size_bytes", sa.BigInteger, nullable=True),
        sa.Column("data_location", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_snapshots_project_location_create", "snapshots", ["project_id", "location", "create_us"])
    op.create_index("ix_snapshots_source_job", "snapshots", ["source_job_id"])
    op.create_index("ix_snapshots_expire", "snapshots", ["expire_us"])
    op.create_index("ix_snapshots_state_create", "snapshots", ["state", "create_us"])


def downgrade() -> None:
    op.drop_table("snapshots")
