"""Identity and access: service accounts, their public keys, IAM policies, access tokens, the audit log.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "service_accounts",
        sa.Column("email", sa.String(256), primary_key=True),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(256), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("create_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_service_accounts_project", "service_accounts", ["project_id", "email"])
    op.create_table(
        "service_account_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        sa.Column("expire_us", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_service_account_keys_email", "service_account_keys", ["email"])
    op.create_table(
        "iam_policies",
        sa.Column("resource", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("bindings", sa.Text, nullable=False),
    )
    op.create_table(
        "access_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("expire_us", sa.BigInteger, nullable=False),
        sa.Column("job", sa.String(512), nullable=False, server_default=""),
    )
    op.create_index("ix_access_tokens_key", "access_tokens", ["key_id"])
    op.create_index("ix_access_tokens_expire", "access_tokens", ["expire_us"])
    op.create_table(
        "audit_log",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("project_id", sa.String(128), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("caller_ip", sa.String(64), nullable=False, server_default=""),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_project_seq", "audit_log", ["project_id", "seq"])


def downgrade() -> None:
    for table in ("audit_log", "access_tokens", "iam_policies", "service_account_keys", "service_accounts"):
        op.drop_table(table)
