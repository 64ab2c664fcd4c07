"""The SQL table catalog: local files SQL queries can read, per project.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sql_tables",
        sa.Column("project_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sql_tables")
