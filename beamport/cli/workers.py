"""`beamport workers ...`: the service's worker registry (Beamport's own view; Dataflow has no such call)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from beamport.cli.client import DEFAULT_ENDPOINT, DEFAULT_REGION
from beamport.cli.jobs import Endpoint, OptionalRegion, OutputFormat, Project, session
from beamport.cli.output import Format

app = typer.Typer(help="The workers a Beamport service knows: health, CPU, uptime, current work.", no_args_is_help=True)


@app.command("list")
def list_workers(
    job: Annotated[str | None, typer.Option("--job", help="Only the workers of this job.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also workers that are gone: lost, broken or shut down.")] = False,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    project: Project = None,
    region: OptionalRegion = None,
    format: OutputFormat = Format.table,
):
    """List live workers (running, idle, unhealthy): health, CPU %, uptime, work item, last report. With --project
    (or --region): the workers of that project's (region's) jobs, and those that serve no job yet."""
    with session(endpoint, project, region or DEFAULT_REGION, format, need_project=False) as s:
        s.printer.workers(s.client.list_workers(job, all_, project, region), time.time_ns() // 1000)


@app.command()
def describe(
    worker_id: Annotated[str, typer.Argument(help="The worker's id.", show_default=False)],
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    format: OutputFormat = Format.table,
):
    """Show a worker: its last health report, CPU samples and lifecycle events."""
    with session(endpoint, None, DEFAULT_REGION, format, need_project=False) as s:
        s.printer.document(s.client.get_worker(worker_id))
