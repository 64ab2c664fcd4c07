"""Entry point of the `beamport` command."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import typer
from pydantic import ValidationError

from beamport.cli import emulators, iam, jobs, snapshots, sql, templates
from beamport.cli import workers as workers_cli
from beamport.config import EngineSettings, Settings
from beamport.sandbox import SandboxUnavailable

SettingsType = TypeVar("SettingsType", bound=EngineSettings)

app = typer.Typer(help="Beamport: the Dataflow API, self-hosted.", no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        from beamport import __version__

        typer.echo(f"beamport {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Beamport: the Dataflow API, self-hosted."""


app.add_typer(jobs.app, name="jobs")
app.add_typer(workers_cli.app, name="workers")
app.add_typer(templates.app, name="templates")
app.add_typer(templates.flex_app, name="flex-template")
app.add_typer(sql.app, name="sql")
app.add_typer(snapshots.app, name="snapshots")
app.add_typer(iam.app, name="iam")
app.add_typer(iam.projects_app, name="projects")
app.add_typer(iam.organizations_app, name="organizations")
app.add_typer(iam.logs_app, name="logs")
app.add_typer(iam.console_app, name="console")
app.add_typer(emulators.app, name="emulators")


# Options that are settings (beamport.config): their defaults are the settings' own, shown in --help; only what is
# given on the command line is passed on, so that a BEAMPORT_* variable wins over a default, a flag over both.
def _default(name: str):
    return Settings.model_fields[name].get_default(call_default_factory=True)


# The streaming engines (docs/engines.md), for `serve` and `worker` alike.
FLINK_MASTER = typer.Option(
    None, help="host:port of the Flink cluster's REST API, the streaming engine (or BEAMPORT_FLINK_MASTER)."
)
FLINK_JOB_SERVER = typer.Option(None, help="host:port of Beam's Flink job server (or BEAMPORT_FLINK_JOB_SERVER).")
FLINK_SDK_POOL = typer.Option(
    None, help="host:port of the Python SDK worker pool Flink's tasks use (or BEAMPORT_FLINK_SDK_POOL)."
)
FLINK_SHARED_DIR = typer.Option(
    None,
    help="A directory the workers share with Flink's SDK workers (drain signals; default /tmp/beamport-flink; "
    "or BEAMPORT_FLINK_SHARED_DIR).",
)
FLINK_BEAM_ON_CLUSTER = typer.Option(
    None,
    "--flink-beam-on-cluster",
    help="The Flink cluster runs from the job server's Beam jars and has Beamport's NothingToStage (as "
    "scripts/flink-cluster's does): jobs are submitted without those jars (or BEAMPORT_FLINK_BEAM_ON_CLUSTER).",
)
FLINK_CLUSTER_DIR = typer.Option(
    None,
    help="scripts/flink-cluster's directory, hidden from user code: its pool runs programs there, outside the "
    "sandbox (or BEAMPORT_FLINK_CLUSTER_DIR, which its endpoints.env sets).",
)
PRISM = typer.Option(
    None,
    help="Beam's Prism binary (streaming without Flink; default: on the PATH, in Go's bin, or where "
    "scripts/prism-build puts it; 'none': no Prism; or BEAMPORT_PRISM).",
)
# The sandbox of user code (docs/security.md), for `serve` and `worker` alike.
SANDBOX = typer.Option(
    _default("sandbox"),
    help="Run user code under bubblewrap: auto (when installed), required (refuse to run jobs without), off "
    "(or BEAMPORT_SANDBOX).",
)
JOB_MEMORY = typer.Option(None, help="Memory (address space) a job's processes may use, e.g. 4G (default: no limit).")
JOB_OPEN_FILES = typer.Option(None, help="Open files a job's process may hold (default: the system's limit).")
JOB_PROCESSES = typer.Option(None, help="Processes of this host's user a job may start (default: the system's limit).")
ENGINE_OPTIONS = (
    "flink_master",
    "flink_job_server",
    "flink_sdk_pool",
    "flink_shared_dir",
    "flink_beam_on_cluster",
    "flink_cluster_dir",
    "prism",
    "sandbox",
    "job_memory",
    "job_open_files",
    "job_processes",
)
# Options named otherwise than their settings.
SETTING_OF_OPTION = {
    "workers": "local_workers",
    "worker_report_interval": "worker_report_interval_s",
    "allow_path": "allow_paths",
    "allowed_host": "allowed_hosts",
    "request_header_timeout": "request_header_timeout_s",
    "request_body_timeout": "request_body_timeout_s",
}
LIMIT_OF_OPTION = {"job_memory": "memory_bytes", "job_open_files": "open_files", "job_processes": "processes"}


def _given(ctx: typer.Context, names=None) -> dict:
    """The settings given on the command line (of `names`, or all), by setting name (nested ones as dicts)."""
    values: dict = {}
    for name, value in ctx.params.items():
        # By name: typer carries a click of its own, whose ParameterSource is not click's.
        source = ctx.get_parameter_source(name)  # None only for a name that is no parameter
        if source is None or source.name != "COMMANDLINE" or (names and name not in names):
            continue
        if name.startswith("flink_"):
            values.setdefault("flink", {})[name.removeprefix("flink_")] = value
        elif name in LIMIT_OF_OPTION:
            values.setdefault("job_limits", {})[LIMIT_OF_OPTION[name]] = value
        elif name == "no_auth":
            values["auth"] = not value
        else:
            values[SETTING_OF_OPTION.get(name, name)] = value
    return values


def _build(settings_class: type[SettingsType], values: dict) -> SettingsType:
    """The settings, once: `values` given, else the environment's, else defaults. Wrong ones are a usage error."""
    try:
        return settings_class(**values)
    except ValidationError as exc:
        for problem in exc.errors():
            text = problem["msg"].removeprefix("Value error, ")
            name = "_".join(map(str, problem["loc"]))
            if problem["type"] != "value_error" and name:  # pydantic's own words: say which setting
                text = f"{name} (BEAMPORT_{name.upper()}): {text}"
            typer.echo(f"error: {text}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    ctx: typer.Context,
    host: str = typer.Option(_default("host"), help="Interface to listen on."),
    port: int = typer.Option(_default("port"), help="Port to listen on."),
    grpc_port: int = typer.Option(
        _default("grpc_port"), help="Port to serve Dataflow's gRPC services (v1beta3) on, beside REST (0: none)."
    ),
    data_dir: Path = typer.Option(
        _default("data_dir"), help="Where state lives (SQLite database, files; or BEAMPORT_DATA_DIR)."
    ),
    database_url: str | None = typer.Option(
        None, help="postgresql://... to keep state in PostgreSQL instead of SQLite (or BEAMPORT_DATABASE_URL)."
    ),
    max_request_bytes: int = typer.Option(_default("max_request_bytes"), help="Largest request body accepted."),
    log_level: str = typer.Option(_default("log_level"), help="debug, info, warning or error."),
    workers: int = typer.Option(
        _default("local_workers"),
        "--workers",
        "--max-concurrent-jobs",
        help="Workers run on this host, each running one job at a time (0: none; remote workers only).",
    ),
    worker_report_interval: float = typer.Option(
        _default("worker_report_interval_s"),
        help="Seconds between a worker's health reports, until the service adapts it.",
    ),
    allow_path: list[Path] = typer.Option(
        [], help="A directory where jobs may read and write files, besides the data dir and the start directory."
    ),
    sdk_workers_per_job: int = typer.Option(
        _default("sdk_workers_per_job"),
        help="SDK worker processes a job runs on when its options (num_workers, direct_num_workers) do not say.",
    ),
    flink_master: str | None = FLINK_MASTER,
    flink_job_server: str | None = FLINK_JOB_SERVER,
    flink_sdk_pool: str | None = FLINK_SDK_POOL,
    flink_shared_dir: Path | None = FLINK_SHARED_DIR,
    flink_beam_on_cluster: bool | None = FLINK_BEAM_ON_CLUSTER,
    flink_cluster_dir: Path | None = FLINK_CLUSTER_DIR,
    prism: str | None = PRISM,
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Answer every call without credentials (refused unless --host is a loopback address)."
    ),
    allowed_host: list[str] = typer.Option(
        [], help="A host name clients reach this server by (IP addresses and loopback names always work)."
    ),
    max_active_jobs: int = typer.Option(
        _default("max_active_jobs"),
        help="Quota: active jobs a project may have at once (Dataflow's default, 25; 0: no quota).",
    ),
    max_jobs_per_minute: int = typer.Option(
        _default("max_jobs_per_minute"), help="Quota: jobs a project may create per minute (0: no quota)."
    ),
    request_header_timeout: float = typer.Option(
        _default("request_header_timeout_s"),
        help="Seconds a client has to send a request's line and headers (else 408, connection closed).",
    ),
    request_body_timeout: float = typer.Option(
        _default("request_body_timeout_s"),
        help="Seconds a client has to send a request's body once the server reads it (else 408).",
    ),
    sandbox: str = SANDBOX,
    job_memory: str | None = JOB_MEMORY,
    job_open_files: int | None = JOB_OPEN_FILES,
    job_processes: int | None = JOB_PROCESSES,
    emulators: str | None = typer.Option(
        None,
        help="Google service emulators to run beside the API, comma-separated: gcs (a GCS endpoint), pubsub (a "
        "Pub/Sub endpoint, in memory), bigquery (a BigQuery endpoint), metadata (a GCE metadata server handing "
        "out tokens on loopback); their variables go to DATA_DIR/emulators.env (or BEAMPORT_EMULATORS; "
        "docs/emulators.md).",
    ),
    emulator_bin_dir: Path | None = typer.Option(
        None, help="Where emulators are built and cached (default ~/.cache/beamport/bin; or BEAMPORT_EMULATOR_BIN_DIR)."
    ),
    metadata_project: str = typer.Option(
        _default("metadata_project"),
        help="The project the metadata server names; its tokens may develop jobs there (or BEAMPORT_METADATA_PROJECT).",
    ),
):
    """Serve the Dataflow v1b3 REST API, and run the jobs submitted to it.

    Each option may be set by a BEAMPORT_* environment variable instead (docs/cli.md); the option wins."""
    from beamport.server import serve as run

    run(_build(Settings, _given(ctx)))


@app.command()
def worker(
    ctx: typer.Context,
    endpoint: str = typer.Option(..., envvar="BEAMPORT_ENDPOINT", help="The service's address."),
    data_dir: Path = typer.Option(Path("beamport-worker"), help="Where this worker keeps its executors' logs."),
    project: str = typer.Option("-", help="Lease only work of this project ('-': any)."),
    region: str = typer.Option("-", help="Lease only work of jobs in this region ('-': any)."),
    job_id: str = typer.Option("-", help="Lease only work of this job ('-': any)."),
    worker_id: str | None = typer.Option(None, help="This worker's name (default: host and pid)."),
    allow_path: list[Path] = typer.Option([], help="A directory jobs may read and write files in."),
    sdk_workers: int = typer.Option(1, help="SDK worker processes, when the job's options do not say."),
    once: bool = typer.Option(False, help="Run at most one work item, then exit."),
    preemptible: bool = typer.Option(False, help="A SIGTERM means preemption (the shutdown notice says so)."),
    poll_interval: float = typer.Option(0.25, help="Seconds between lease attempts while there is no work."),
    flink_master: str | None = FLINK_MASTER,
    flink_job_server: str | None = FLINK_JOB_SERVER,
    flink_sdk_pool: str | None = FLINK_SDK_POOL,
    flink_shared_dir: Path | None = FLINK_SHARED_DIR,
    flink_beam_on_cluster: bool | None = FLINK_BEAM_ON_CLUSTER,
    flink_cluster_dir: Path | None = FLINK_CLUSTER_DIR,
    prism: str | None = PRISM,
    credentials: Path | None = typer.Option(
        None,
        envvar="GOOGLE_APPLICATION_CREDENTIALS",
        help="A service-account key file (roles/dataflow.worker) to call the service with.",
    ),
    deny_path: list[Path] = typer.Option([], hidden=True, help="A path under the allowed ones jobs may not name."),
    sandbox: str = SANDBOX,
    job_memory: str | None = JOB_MEMORY,
    job_open_files: int | None = JOB_OPEN_FILES,
    job_processes: int | None = JOB_PROCESSES,
):
    """Run a worker: lease work through the API, run it on its engine (embedded, Flink or Prism), report until it
    ends. The engine and sandbox options may be set by the same BEAMPORT_* variables as `serve`'s."""
    import logging

    engines = _build(EngineSettings, _given(ctx, ENGINE_OPTIONS))
    from beamport.worker.harness import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per lease poll
    roots = [p.resolve() for p in allow_path]
    key = credentials.resolve() if credentials else None
    jail = engines.sandbox_with(roots, hidden=[*(p.resolve() for p in deny_path), *([key] if key else [])])
    try:
        jail.require()
    except SandboxUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.getLogger("beamport.worker").info("worker: %s", jail.describe())
    raise typer.Exit(
        Worker(
            endpoint,
            data_dir.resolve(),
            worker_id,
            roots,
            sdk_workers,
            project,
            region,
            job_id,
            once=once,
            preemptible=preemptible,
            poll_s=poll_interval,
            credentials=key,
            deny_paths=[p.resolve() for p in deny_path],
            sandbox=jail,
            engines=engines,
        ).run()
    )


def main() -> None:
    app()
