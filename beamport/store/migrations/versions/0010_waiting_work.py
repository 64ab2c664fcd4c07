"""waiting_work: one row per (project, location) that has pending work items, with its oldest pending item's id,
kept exact in the transaction of every work item's change (store/work_items.py). The lease's fair-share choice
reads these few rows: it searched the index of pending work once per project with waiting work (2.2-2.9 ms of a
PostgreSQL lease with 201 such projects, benchmarks/README.md). Filled here from the pending work items.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from beamport.store.work_items import fill_waiting_work

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waiting_work",
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("oldest_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "location"),
    )
    fill_waiting_work(op.get_bind())


def downgrade() -> None:
    op.drop_table("waiting_work")
