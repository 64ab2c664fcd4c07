"""Entry point of the `beamport` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from beamport.cli import jobs
from beamport.config import DEFAULT_MAX_REQUEST_BYTES, Settings

app = typer.Typer(help="Beamport: the Dataflow API, self-hosted.", no_args_is_help=True, add_completion=False)
app.add_typer(jobs.app, name="jobs")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    data_dir: Path = typer.Option(
        Path("beamport-data"), envvar="BEAMPORT_DATA_DIR", help="Where state lives (SQLite database, files)."
    ),
    database_url: Optional[str] = typer.Option(
        None, envvar="BEAMPORT_DATABASE_URL", help="postgresql://... to keep state in PostgreSQL instead of SQLite."
    ),
    max_request_bytes: int = typer.Option(DEFAULT_MAX_REQUEST_BYTES, help="Largest request body accepted."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    max_concurrent_jobs: int = typer.Option(
        os.cpu_count() or 1, help="Jobs run at once by this server's local workers (0: none; others queue)."
    ),
    allow_path: list[Path] = typer.Option(
        [], help="A directory where jobs may read and write files, besides the data dir and the start directory."
    ),
    sdk_workers_per_job: int = typer.Option(
        1, help="SDK worker processes a job runs on when its options (num_workers, direct_num_workers) do not say."
    ),
):
    """Serve the Dataflow v1b3 REST API, and run the jobs submitted to it."""
    from beamport.server import serve as run

    run(
        Settings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            max_request_bytes=max_request_bytes,
            log_level=log_level,
            max_concurrent_jobs=max_concurrent_jobs,
            allow_paths=allow_path,
            sdk_workers_per_job=sdk_workers_per_job,
        )
    )


@app.command()
def worker(
    endpoint: str = typer.Option(..., envvar="BEAMPORT_ENDPOINT", help="The service's address."),
    project: Optional[str] = typer.Option(None, help="The job's project."),
    region: str = typer.Option("us-central1", help="The job's region."),
    job_id: Optional[str] = typer.Option(None, help="The job whose work to lease and run."),
    worker_id: Optional[str] = typer.Option(None, help="This worker's name (default: host and pid)."),
    allow_path: list[Path] = typer.Option([], help="A directory the job may read and write files in."),
    sdk_workers: int = typer.Option(1, help="SDK worker processes, when the job's options do not say."),
    standby: bool = typer.Option(
        False, help="Get ready (import the engine), then read the job to run from stdin as one JSON line."
    ),
):
    """Run a worker: lease a job's work through the API, run it on the embedded engine, report until it ends."""
    import json
    import logging
    import sys

    from beamport.worker.harness import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if standby:
        from beamport.worker.harness import warm_up

        warm_up()
        line = sys.stdin.readline()
        if not line:
            raise typer.Exit(0)  # the pool stopped without needing this worker
        assignment = json.loads(line)
        project, region, job_id = assignment["project"], assignment["region"], assignment["job_id"]
        worker_id = assignment.get("worker_id", worker_id)
    if not project or not job_id:
        raise typer.BadParameter("--project and --job-id are required (or --standby)")
    roots = [p.resolve() for p in allow_path]
    raise typer.Exit(run(endpoint, project, region, job_id, worker_id, roots, sdk_workers))


def main() -> None:
    app()
