"""`beamport workers ...`: the service's worker registry (Beamport's own view; Dataflow has no such call)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from beamport.cli.options import ApiOptions, api_command

app = typer.Typer(help="The workers a Beamport service knows: health, CPU, uptime, current work.", no_args_is_help=True)


@app.command("list")
@api_command
def list_workers(
    job: Annotated[str | None, typer.Option("--job", help="Only the workers of this job.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also workers that are gone: lost, broken or shut down.")] = False,
    *,
    api: ApiOptions,
):
    """List live workers (running, idle, unhealthy): health, CPU %, uptime, work item, last report. With --project
    (or --region): the workers of that project's (region's) jobs, and those that serve no job yet."""
    with api.session(need_project=False) as s:
        s.printer.workers(s.client.list_workers(job, all_, api.project, api.region), time.time_ns() // 1000)


@app.command()
@api_command
def describe(
    worker_id: Annotated[str, typer.Argument(help="The worker's id.", show_default=False)],
    *,
    api: ApiOptions,
):
    """Show a worker: its last health report, CPU samples and lifecycle events."""
    with api.session(need_project=False) as s:
        s.printer.document(s.client.get_worker(worker_id))
