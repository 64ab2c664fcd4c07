"""The database schema (SQLAlchemy Core). Changes here need a migration in migrations/versions."""

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData()

# Partial indexes serve only queries that state their condition literally (state = 'PENDING', not a bound value).
PENDING_ONLY = "state = 'PENDING'"
LEASED_ONLY = "state = 'LEASED'"
FROM_SNAPSHOT = "created_from_snapshot_id <> ''"
# The jobs that hold their name: active, and not waiting to take over from the job they update.
HOLDS_NAME: dict[str, Any] = {
    "sqlite_where": text("active = 1 AND replacing_job_id = ''"),
    "postgresql_where": text("active AND replacing_job_id = ''"),
}

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
    # The document's createdFromSnapshotId ("" if none), for the snapshot a job has yet to start from.
    Column("created_from_snapshot_id", String(128), nullable=False, server_default=""),
    # While an update that carries state over is underway (its state being saved), the id of the active job this
    # one replaces; "" otherwise (service/jobs.py).
    Column("replacing_job_id", String(128), nullable=False, server_default=""),
    Index("ix_jobs_project_location_seq", "project_id", "location", "seq"),
    Index("ix_jobs_project_seq", "project_id", "seq"),
    Index("ix_jobs_project_location_active_seq", "project_id", "location", "active", "seq"),
    Index("ix_jobs_project_location_name_seq", "project_id", "location", "name", "seq"),
    # jobs:aggregated (every location) by state and by name.
    Index("ix_jobs_project_active_seq", "project_id", "active", "seq"),
    Index("ix_jobs_project_name_seq", "project_id", "name", "seq"),
    Index("ix_jobs_request", "project_id", "location", "client_request_id"),
    Index("ix_jobs_active_seq", "active", "seq"),
    Index(
        "ix_jobs_from_snapshot",
        "project_id",
        "created_from_snapshot_id",
        sqlite_where=text(FROM_SNAPSHOT),
        postgresql_where=text(FROM_SNAPSHOT),
    ),
    # Dataflow's rule: one active job per (project, region, name); a job waiting to take over from the one it
    # updates gets the name at the swap.
    Index("uq_jobs_active_name", "project_id", "location", "name", unique=True, **HOLDS_NAME),
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
    # Where a time range starts (a job's message times never decrease in seq order), and pages of a minimum
    # importance, one range per importance.
    Index("ix_job_messages_job_time", "job_id", "time_us", "seq"),
    Index("ix_job_messages_job_importance_seq", "job_id", "importance_rank", "seq"),
    sqlite_autoincrement=True,
)

# The unit of work a worker leases: for now one per job, the whole pipeline.
work_items = Table(
    "work_items",
    metadata,
    Column("id", SeqType, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    # The job's project and location (which never change), copied for the lease's indexes.
    Column("project_id", String(128), nullable=False, server_default=""),
    Column("location", String(64), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),  # PENDING, LEASED, DONE, FAILED, CANCELLED
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(256), nullable=True),
    Column("lease_expire_us", BigInteger, nullable=True),
    Column("next_report_index", BigInteger, nullable=False),
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Column("version", Integer, nullable=False),
    Column("failures", Text, nullable=False, server_default="[]"),  # JSON: [{attempt, worker, reason}]
    Column("progress", Float, nullable=True),  # the fraction done, as the worker last reported it
    Index("ix_work_items_job", "job_id"),
    # Waiting work, oldest first, by project (and location); work held, by project and by worker.
    Index(
        "ix_work_items_pending",
        "project_id",
        "id",
        sqlite_where=text(PENDING_ONLY),
        postgresql_where=text(PENDING_ONLY),
    ),
    Index(
        "ix_work_items_pending_location",
        "location",
        "project_id",
        "id",
        sqlite_where=text(PENDING_ONLY),
        postgresql_where=text(PENDING_ONLY),
    ),
    Index("ix_work_items_leased", "project_id", sqlite_where=text(LEASED_ONLY), postgresql_where=text(LEASED_ONLY)),
    Index(
        "ix_work_items_leased_worker", "worker_id", sqlite_where=text(LEASED_ONLY), postgresql_where=text(LEASED_ONLY)
    ),
    sqlite_autoincrement=True,
)

# Waiting work: one row per (project, location) that has pending work items, with its oldest pending item's id.
# Kept exact in the transaction of every work item's change (store/work_items.py), so that the lease's fair-share
# choice reads these few rows instead of searching the index of pending work once per project.
waiting_work = Table(
    "waiting_work",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("location", String(64), primary_key=True),
    Column("oldest_id", BigInteger, nullable=False),
)

# The latest (cumulative) value of each of a job's metrics, as a MetricUpdate document.
job_metrics = Table(
    "job_metrics",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("metric_key", String(2048), primary_key=True),
    Column("update_us", BigInteger, nullable=False),
    Column("doc", Text, nullable=False),
)

# Each fused stage of a job's execution, as the worker reported it.
stage_runs = Table(
    "stage_runs",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("stage", String(1024), primary_key=True),
    Column("state", String(64), nullable=False),
    Column("start_us", BigInteger, nullable=True),
    Column("end_us", BigInteger, nullable=True),
    Column("worker_id", String(256), nullable=True),
    Column("work_item_id", BigInteger, nullable=True),
    Column("ordinal", Integer, nullable=False),  # the order stages started in
)

# The worker registry: each worker the service has heard from, its last health and CPU sample.
workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(256), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("location", String(64), nullable=False),
    Column("job_id", String(128), nullable=False),  # the job it serves (or served last)
    Column("state", String(16), nullable=False),  # RUNNING, UNHEALTHY, IDLE, BROKEN, LOST, SHUTDOWN
    Column("reason", Text, nullable=False, server_default=""),  # why it is not RUNNING
    Column("labels", Text, nullable=False),
    Column("container_start_us", BigInteger, nullable=True),
    Column("vm_startup_us", BigInteger, nullable=True),
    Column("first_seen_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Column("last_health_us", BigInteger, nullable=True),
    Column("health", Text, nullable=False, server_default="{}"),  # the last WorkerHealthReport
    Column("report_interval_us", BigInteger, nullable=False),  # the health interval the service asked for
    Column("cpu_total_ms", BigInteger, nullable=True),
    Column("cpu_rate", Float, nullable=True),
    Column("cpu_us", BigInteger, nullable=True),
    Column("work_item_id", BigInteger, nullable=True),
    Column("stacks_request_us", BigInteger, nullable=True),
    Column("stacks_us", BigInteger, nullable=True),
    Column("stacks", Text, nullable=False, server_default="[]"),  # the last thread stacks it sent
    Index("ix_workers_job", "job_id"),
    Index("ix_workers_state", "state"),
)

worker_cpu_samples = Table(
    "worker_cpu_samples",
    metadata,
    Column("worker_id", String(256), primary_key=True),
    Column("time_us", BigInteger, primary_key=True),
    Column("total_ms", BigInteger, nullable=False),
    Column("rate", Float, nullable=False),
)

worker_events = Table(
    "worker_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("worker_id", String(256), nullable=False),
    Column("job_id", String(128), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("event", String(128), nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Index("ix_worker_events_worker_seq", "worker_id", "seq"),
    sqlite_autoincrement=True,
)

# Each change of a job's worker count (AutoscalingEvent), for messages.list.
autoscaling_events = Table(
    "autoscaling_events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    Column("time_us", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),  # TARGET_NUM_WORKERS_CHANGED, CURRENT_NUM_WORKERS_CHANGED...
    Column("current_workers", Integer, nullable=False),
    Column("target_workers", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Index("ix_autoscaling_events_job_seq", "job_id", "seq"),
    sqlite_autoincrement=True,
)

# The SQL table catalog: local files that SQL queries can read by name (docs/sql.md).
sql_tables = Table(
    "sql_tables",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("path", Text, nullable=False),  # a file or a glob
    Column("format", String(16), nullable=False),  # csv, jsonl, parquet
    Column("schema", Text, nullable=False),  # JSON: [{name, type}], GoogleSQL types
    Column("create_us", BigInteger, nullable=False),
)

# Snapshots of streaming jobs (Dataflow's snapshots resource): the record; the data is the engine's.
snapshots = Table(
    "snapshots",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("location", String(64), nullable=False),
    Column("source_job_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # PENDING, RUNNING, READY, FAILED (Dataflow's SnapshotState)
    Column("create_us", BigInteger, nullable=False),
    Column("ttl_us", BigInteger, nullable=False),
    Column("expire_us", BigInteger, nullable=False),  # create_us + ttl_us: when the sweeper deletes it
    Column("description", Text, nullable=False, server_default=""),
    Column("snapshot_sources", Boolean, nullable=False, server_default=false()),
    Column("disk_size_bytes", BigInteger, nullable=True),  # once READY
    Column("data_location", Text, nullable=False, server_default=""),  # where the engine saved it, once READY
    Column("error", Text, nullable=False, server_default=""),  # why it FAILED (Dataflow's Snapshot has no field)
    Index("ix_snapshots_project_location_create", "project_id", "location", "create_us"),
    Index("ix_snapshots_source_job", "source_job_id"),
    Index("ix_snapshots_expire", "expire_us"),
    Index("ix_snapshots_state_create", "state", "create_us"),
)

# Identity and access (docs/security.md): service accounts, their public keys, policies, issued tokens, audit.
service_accounts = Table(
    "service_accounts",
    metadata,
    Column("email", String(256), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("display_name", String(256), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("create_us", BigInteger, nullable=False),
    Index("ix_service_accounts_project", "project_id", "email"),
)

# Only public keys are kept: a key's private half is handed out once, when it is created.
service_account_keys = Table(
    "service_account_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("email", String(256), nullable=False),
    Column("public_key", Text, nullable=False),  # PEM
    Column("create_us", BigInteger, nullable=False),
    Column("expire_us", BigInteger, nullable=True),  # validBeforeTime; None: does not expire
    Index("ix_service_account_keys_email", "email"),
)

# A resource's IAM policy (a project, or "*": every project) as Google's Policy JSON, version-checked.
iam_policies = Table(
    "iam_policies",
    metadata,
    Column("resource", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("bindings", Text, nullable=False),  # JSON: [{"role": ..., "members": [...]}]
)

# Access tokens answered at the token endpoint, by their SHA-256 (the tokens themselves are never kept).
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("email", String(256), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("expire_us", BigInteger, nullable=False),
    # projects/P/locations/L/jobs/J for a token exchanged down to one job (a worker's executor); "" otherwise
    Column("job", String(512), nullable=False, server_default=""),
    Index("ix_access_tokens_key", "key_id"),
    Index("ix_access_tokens_expire", "expire_us"),
)

# Admin activity, as Cloud Audit Logs keeps it: every state-changing call, and every refused one.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("time_us", BigInteger, nullable=False),
    Column("project_id", String(128), nullable=False),  # "" for calls on no project (e.g. a token request)
    Column("principal", String(256), nullable=False),  # the caller's email, "anonymous", or "" when unknown
    Column("method", String(128), nullable=False),  # e.g. dataflow.jobs.create
    Column("resource", Text, nullable=False),  # the request path
    Column("status", String(32), nullable=False),  # OK or a google.rpc.Code name
    Column("message", Text, nullable=False, server_default=""),
    Column("caller_ip", String(64), nullable=False, server_default=""),
    Index("ix_audit_log_project_seq", "project_id", "seq"),
    sqlite_autoincrement=True,
)
