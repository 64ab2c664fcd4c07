"""Jobs and job messages.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False, unique=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("client_request_id", sa.String(256), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_project_location_seq", "jobs", ["project_id", "location", "seq"])
    op.create_index("ix_jobs_project_seq", "jobs", ["project_id", "seq"])
    op.create_index("ix_jobs_project_location_active_seq", "jobs", ["project_id", "location", "active", "seq"])
    op.create_index("ix_jobs_project_location_name_seq", "jobs", ["project_id", "location", "name", "seq"])
    op.create_index("ix_jobs_request", "jobs", ["project_id", "location", "client_request_id"])
    op.create_index(
        "uq_jobs_active_name",
        "jobs",
        ["project_id", "location", "name"],
        unique=True,
        sqlite_where=sa.text("active = 1"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "job_messages",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("importance_rank", sa.SmallInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_job_messages_job_seq", "job_messages", ["job_id", "seq"])


def downgrade() -> None:
    op.drop_table("job_messages")
    op.drop_table("jobs")
