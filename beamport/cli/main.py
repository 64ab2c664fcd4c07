"""Entry point of the `beamport` command."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from beamport.cli import iam, jobs, snapshots, sql, templates
from beamport.cli import workers as workers_cli
from beamport.config import DEFAULT_MAX_REQUEST_BYTES, FlinkConfig, Settings
from beamport.sandbox import MODES, Limits, Sandbox, SandboxUnavailable, parse_size

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


# The streaming engines (docs/engines.md), for `serve` and `worker` alike.
FLINK_MASTER = typer.Option(
    None, envvar="BEAMPORT_FLINK_MASTER", help="host:port of the Flink cluster's REST API (streaming engine)."
)
FLINK_JOB_SERVER = typer.Option(None, envvar="BEAMPORT_FLINK_JOB_SERVER", help="host:port of Beam's Flink job server.")
FLINK_SDK_POOL = typer.Option(
    None, envvar="BEAMPORT_FLINK_SDK_POOL", help="host:port of the Python SDK worker pool Flink's tasks use."
)
# The sandbox of user code (docs/security.md), for `serve` and `worker` alike.
SANDBOX = typer.Option(
    "auto",
    envvar="BEAMPORT_SANDBOX",
    help="Run user code under bubblewrap: auto (when installed), required (refuse to run jobs without), off.",
)
JOB_MEMORY = typer.Option(None, help="Memory (address space) a job's processes may use, e.g. 4G (default: no limit).")
JOB_OPEN_FILES = typer.Option(None, help="Open files a job's process may hold (default: the system's limit).")
JOB_PROCESSES = typer.Option(None, help="Processes of this host's user a job may start (default: the system's limit).")
PRISM = typer.Option(
    None,
    envvar="BEAMPORT_PRISM",
    help="Beam's Prism binary (streaming without Flink; default: on the PATH, in Go's bin, or where "
    "scripts/prism-build puts it; 'none': no Prism).",
)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    data_dir: Path = typer.Option(
        Path("beamport-data"), envvar="BEAMPORT_DATA_DIR", help="Where state lives (SQLite database, files)."
    ),
    database_url: str | None = typer.Option(
        None, envvar="BEAMPORT_DATABASE_URL", help="postgresql://... to keep state in PostgreSQL instead of SQLite."
    ),
    max_request_bytes: int = typer.Option(DEFAULT_MAX_REQUEST_BYTES, help="Largest request body accepted."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    workers: int = typer.Option(
        os.cpu_count() or 1,
        "--workers",
        "--max-concurrent-jobs",
        help="Workers run on this host, each running one job at a time (0: none; remote workers only).",
    ),
    worker_report_interval: float = typer.Option(
        5.0, help="Seconds between a worker's health reports, until the service adapts it."
    ),
    allow_path: list[Path] = typer.Option(
        [], help="A directory where jobs may read and write files, besides the data dir and the start directory."
    ),
    sdk_workers_per_job: int = typer.Option(
        1, help="SDK worker processes a job runs on when its options (num_workers, direct_num_workers) do not say."
    ),
    flink_master: str | None = FLINK_MASTER,
    flink_job_server: str | None = FLINK_JOB_SERVER,
    flink_sdk_pool: str | None = FLINK_SDK_POOL,
    prism: Path | None = PRISM,
    no_auth: bool = typer.Option(
        False, "--no-auth", help="Answer every call without credentials (refused unless --host is a loopback address)."
    ),
    allowed_host: list[str] = typer.Option(
        [], help="A host name clients reach this server by (IP addresses and loopback names always work)."
    ),
    max_active_jobs: int = typer.Option(
        25, help="Quota: active jobs a project may have at once (Dataflow's default, 25; 0: no quota)."
    ),
    max_jobs_per_minute: int = typer.Option(60, help="Quota: jobs a project may create per minute (0: no quota)."),
    request_header_timeout: float = typer.Option(
        10.0, help="Seconds a client has to send a request's line and headers (else 408, connection closed)."
    ),
    request_body_timeout: float = typer.Option(
        30.0, help="Seconds a client has to send a request's body once the server reads it (else 408)."
    ),
    sandbox: str = SANDBOX,
    job_memory: str | None = JOB_MEMORY,
    job_open_files: int | None = JOB_OPEN_FILES,
    job_processes: int | None = JOB_PROCESSES,
):
    """Serve the Dataflow v1b3 REST API, and run the jobs submitted to it."""
    from beamport.http.guard import is_loopback
    from beamport.server import serve as run

    if no_auth and not is_loopback(host):
        typer.echo(
            f"error: --no-auth is refused on --host {host}: without authentication anyone who reaches the port runs "
            "code on this machine. Bind to 127.0.0.1, or keep authentication on (docs/security.md).",
            err=True,
        )
        raise typer.Exit(2)
    _use_streaming_engines(flink_master, flink_job_server, flink_sdk_pool, prism)

    run(
        Settings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            max_request_bytes=max_request_bytes,
            log_level=log_level,
            local_workers=workers,
            worker_report_interval_s=worker_report_interval,
            allow_paths=allow_path,
            sdk_workers_per_job=sdk_workers_per_job,
            auth=not no_auth,
            allowed_hosts=allowed_host,
            max_active_jobs=max_active_jobs,
            max_jobs_per_minute=max_jobs_per_minute,
            request_header_timeout_s=request_header_timeout,
            request_body_timeout_s=request_body_timeout,
            sandbox=_sandbox_mode(sandbox),
            job_limits=Limits(parse_size(job_memory), job_open_files, job_processes),
        )
    )


def _sandbox_mode(mode: str) -> str:
    if mode not in MODES:
        raise typer.BadParameter(f"--sandbox must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def _use_streaming_engines(
    master: str | None, job_server: str | None, sdk_pool: str | None, prism: Path | None
) -> None:
    """The streaming engines go in the environment, where this process and the workers it starts read them."""
    if prism:
        os.environ["BEAMPORT_PRISM"] = "none" if str(prism) == "none" else str(prism.resolve())
    given = {"MASTER": master, "JOB_SERVER": job_server, "SDK_POOL": sdk_pool}
    if any(given.values()) and not all(given.values()):
        missing = [f"--flink-{k.lower().replace('_', '-')}" for k, v in given.items() if not v]
        raise typer.BadParameter(f"the Flink engine needs all three endpoints: missing {', '.join(missing)}")
    for key, value in given.items():
        if value:
            os.environ[f"BEAMPORT_FLINK_{key}"] = value


@app.command()
def worker(
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
    prism: Path | None = PRISM,
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
    """Run a worker: lease work through the API, run it on its engine (embedded or Flink), report until it ends."""
    import logging

    _use_streaming_engines(flink_master, flink_job_server, flink_sdk_pool, prism)
    from beamport.worker.harness import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per lease poll
    roots = [p.resolve() for p in allow_path]
    key = credentials.resolve() if credentials else None
    flink = FlinkConfig.from_env()
    jail = Sandbox(
        _sandbox_mode(sandbox),
        writable=roots,
        shared=[flink.shared_dir] if flink else [],
        hidden=[*(p.resolve() for p in deny_path), *([key] if key else [])],
        limits=Limits(parse_size(job_memory), job_open_files, job_processes),
    )
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
        ).run()
    )


def main() -> None:
    app()
