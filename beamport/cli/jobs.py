"""`beamport jobs ...`: client commands over the HTTP API (list, describe, run, cancel, drain, messages)."""

from __future__ import annotations

import copy
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from beamport.cli.client import (
    ClientError,
    MessageFollower,
)
from beamport.cli.options import ApiOptions, Session, api_command

app = typer.Typer(help="List, describe and steer jobs on a Beamport (or Dataflow) endpoint.", no_args_is_help=True)


class Status(StrEnum):
    all = "all"
    active = "active"
    terminated = "terminated"


class Importance(StrEnum):
    debug = "debug"
    detailed = "detailed"
    basic = "basic"
    warning = "warning"
    error = "error"


JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


@app.command("list")
@api_command
def list_jobs(
    status: Annotated[Status, typer.Option(help="Which jobs: all, active or terminated.")] = Status.all,
    name: Annotated[str | None, typer.Option(help="Only jobs with this exact name.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="List at most this many jobs (newest first).")] = 100,
    all_regions: Annotated[bool, typer.Option("--all-regions", help="List the jobs of every region.")] = False,
    *,
    api: ApiOptions,
):
    """List jobs, newest first."""
    with api.session() as s:
        jobs = list(
            s.client.iter_jobs(
                s.project,
                None if all_regions else s.region,
                filter=status.value.upper(),
                name=name,
                limit=limit,
            )
        )
        s.printer.jobs(jobs)


@app.command()
@api_command
def describe(
    job_id: JobId,
    full: Annotated[bool, typer.Option("--full", help="Everything about the job (JOB_VIEW_ALL).")] = False,
    *,
    api: ApiOptions,
):
    """Show a job (its summary; --full for everything, environment and steps included)."""
    with api.session() as s:
        view = "JOB_VIEW_ALL" if full else "JOB_VIEW_SUMMARY"
        s.printer.job(s.client.get_job(s.project, s.region, job_id, view=view))


# What a job created again from its source job takes over: what DataflowRunner sent to create it, less what
# belongs to one submission (clientRequestId, replaceJobId, transformNameMapping, createdFromSnapshotId) and
# what the service derives from the staged pipeline itself (steps, pipelineDescription).
_RERUN_FIELDS = ("type", "environment", "labels", "stepsLocation")
# Pipeline options of one submission (an update of a running job), not of the pipeline.
_SUBMISSION_OPTIONS = ("update", "transform_name_mapping")


def rerun_body(source: dict, name: str, snapshot_id: str, client_request_id: str) -> dict:
    """A jobs.create body that runs the pipeline of `source` (a job as JOB_VIEW_ALL shows it) again, as job
    `name`, starting from snapshot `snapshot_id`: the same staged pipeline (pipelineUrl), packages, options,
    type and labels (the engine's among them)."""
    body = {key: copy.deepcopy(source[key]) for key in _RERUN_FIELDS if key in source}
    options = body.get("environment", {}).get("sdkPipelineOptions", {}).get("options")
    if not isinstance(options, dict) or not options.get("pipelineUrl"):
        raise ClientError(
            f"Job {source.get('id')} names no staged pipeline (environment.sdkPipelineOptions.options.pipelineUrl): "
            "only jobs submitted by Beam's DataflowRunner can be run again."
        )
    for key in _SUBMISSION_OPTIONS:
        options.pop(key, None)
    options["job_name"] = name  # as DataflowRunner's own options say for --job_name, --create_from_snapshot
    options["create_from_snapshot"] = snapshot_id
    body.update(name=name, createdFromSnapshotId=snapshot_id, clientRequestId=client_request_id)
    return body


def _new_request_id() -> str:
    """A clientRequestId as DataflowRunner makes them: UTC time to the microsecond, then a random number."""
    return f"{datetime.now(UTC):%Y%m%d%H%M%S%f}-{random.randrange(1000, 10000)}"


@app.command("run")
@api_command
def run_job(
    from_snapshot: Annotated[
        str,
        typer.Option(
            "--from-snapshot",
            help="Start from this snapshot: the pipeline of its job, from its state.",
            show_default=False,
        ),
    ],
    job_name: Annotated[
        str | None, typer.Option("--job-name", help="Name of the new job (default: the source job's name).")
    ] = None,
    *,
    api: ApiOptions,
):
    """Start a new job that runs the pipeline of a snapshot's job, from the snapshot's state."""
    with api.session() as s:
        snapshot = s.client.get_snapshot(s.project, s.region, from_snapshot)
        source_id = snapshot.get("sourceJobId")
        if not source_id:
            raise ClientError(f"Snapshot {from_snapshot} names no source job (sourceJobId).")
        source = s.client.get_job(s.project, s.region, source_id, view="JOB_VIEW_ALL")
        name = job_name or source.get("name", "")
        # Dataflow answers a create of an active job's name with that job, unchanged: ask first.
        active = next(iter(s.client.iter_jobs(s.project, s.region, filter="ACTIVE", name=name, limit=1)), None)
        if active is not None:
            which = "The snapshot's job" if active.get("id") == source_id else "Job"
            raise ClientError(
                f"{which} [{active.get('id')}] is still active under the name '{name}' "
                f"(state {active.get('currentState')}): cancel or drain it first (beamport jobs cancel|drain "
                f"{active.get('id')}), or pass --job-name to give the new job another name."
            )
        request_id = _new_request_id()
        body = rerun_body(source, name, from_snapshot, request_id)
        job = s.client.create_job(s.project, s.region, body)
        if job.get("clientRequestId") != request_id:  # an active job took the name meanwhile: it was answered
            raise ClientError(
                f"Job [{job.get('id')}] became active under the name '{name}' meanwhile (state "
                f"{job.get('currentState')}); no job was created. Cancel or drain it, or pass --job-name."
            )
        s.printer.job(job)
        s.printer.note(f"Created job [{job.get('id')}] from snapshot [{from_snapshot}] of job [{source_id}].")


def _request_state(s: Session, job_id: str, action: str, state: str) -> None:
    job = s.client.request_state(s.project, s.region, job_id, state)
    s.printer.state_change(job, job_id, action, state)


@app.command()
@api_command
def cancel(
    job_id: JobId,
    *,
    api: ApiOptions,
):
    """Cancel a job: it stops at once, without finishing its work."""
    with api.session() as s:
        _request_state(s, job_id, "cancel", "JOB_STATE_CANCELLED")


@app.command()
@api_command
def drain(
    job_id: JobId,
    *,
    api: ApiOptions,
):
    """Drain a streaming job: it stops reading input and finishes what it has read."""
    with api.session() as s:
        _request_state(s, job_id, "drain", "JOB_STATE_DRAINED")


@app.command()
@api_command
def messages(
    job_id: JobId,
    importance: Annotated[
        Importance, typer.Option(help="Show messages of this importance and above.")
    ] = Importance.basic,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new messages until the job ends.")
    ] = False,
    poll_interval: Annotated[float, typer.Option(min=0.05, help="With --follow: seconds between two polls.")] = 2.0,
    *,
    api: ApiOptions,
):
    """Print a job's messages (one per line; JSON lines with --format json)."""
    minimum = f"JOB_MESSAGE_{importance.value.upper()}"
    with api.session() as s:
        if not follow:
            s.printer.messages(s.client.iter_messages(s.project, s.region, job_id, minimum))
            return
        follower = MessageFollower(s.client, s.project, s.region, job_id, minimum)
        with _stop_on_interrupt() as stop:
            while not stop.is_set():
                s.printer.messages(follower.poll())
                if follower.finished:
                    s.printer.note(f"Job [{job_id}] ended in state {follower.state}.")
                    return
                stop.wait(poll_interval)
        raise KeyboardInterrupt  # session() ends the command as on any Ctrl-C: exit status 130


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """An event Ctrl-C sets, for a loop to stop at its next check instead of being interrupted wherever it
    is: a KeyboardInterrupt raised inside the HTTP client (between taking a lock of its connection pool and
    the block that releases it) once left `--follow` hung at exit. A second Ctrl-C interrupts at once."""
    stop = threading.Event()

    def interrupted(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
