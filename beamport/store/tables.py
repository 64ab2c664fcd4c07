"""The database schema (SQLAlchemy Core). Changes here need a migration in migrations/versions."""

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, SmallInteger, String, Table, Text, true

metadata = MetaData()

# BigInteger ids that still autoincrement on SQLite ("INTEGER PRIMARY KEY").
SeqType = BigInteger().with_variant(Integer(), "sqlite")

jobs = Table(
    "jobs",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(128), nullable=False, unique=True),
    Column("project_id", String(128), nullable=False),
    Column("location", String(64), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("client_request_id", String(256), nullable=False, default=""),
    Column("active", Boolean, nullable=False),
    Column("create_us", BigInteger, nullable=False),
    Column("end_us", BigInteger, nullable=True),
    Column("version", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_jobs_project_location_seq", "project_id", "location", "seq"),
    Index("ix_jobs_project_seq", "project_id", "seq"),
    Index("ix_jobs_project_location_active_seq", "project_id", "location", "active", "seq"),
    Index("ix_jobs_project_location_name_seq", "project_id", "location", "name", "seq"),
    Index("ix_jobs_request", "project_id", "location", "client_request_id"),
    # Dataflow's rule: one active job per (project, region, name).
    Index(
        "uq_jobs_active_name",
        "project_id",
        "location",
        "name",
        unique=True,
        sqlite_where=Column("active") == true(),
        postgresql_where=Column("active") == true(),
    ),
    sqlite_autoincrement=True,
)

job_messages = Table(
    "job_messages",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("importance_rank", SmallInteger, nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_job_messages_job_seq", "job_id", "seq"),
    sqlite_autoincrement=True,
)
