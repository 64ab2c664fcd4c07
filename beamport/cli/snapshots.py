"""`beamport snapshots ...`: snapshots of streaming jobs (create, list, describe, delete), over the HTTP API."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from beamport import wire
from beamport.cli.jobs import JobId
from beamport.cli.options import ApiOptions, api_command
from beamport.cli.output import Format

app = typer.Typer(help="Snapshots of streaming jobs: their saved state, to start new jobs from.", no_args_is_help=True)

SnapshotId = Annotated[str, typer.Argument(help="The snapshot's id.", show_default=False)]

_TTL_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)\Z")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> str:
    """--ttl 30m, 1h, 7d, 3600s or 3600 -> the Duration's JSON form ("3600s")."""
    match = _TTL_RE.match(text.strip().lower())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration such as 30m, 12h, 7d or 3600s.", param_hint="'--ttl'")
    try:
        return wire.format_duration_us(round(float(match.group(1)) * _UNIT_S[match.group(2)] * 1_000_000))
    except ValueError:  # past a Duration's 10,000 years
        raise typer.BadParameter(f"{text!r} is too long: at most 30d.", param_hint="'--ttl'") from None


@app.command()
@api_command
def create(
    job_id: JobId,
    ttl: Annotated[
        str | None, typer.Option(help="How long the snapshot is kept: 30m, 12h, 7d... (default 7d, at most 30d).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="A description of the snapshot.")] = None,
    snapshot_sources: Annotated[
        bool, typer.Option("--snapshot-sources", help="Also snapshot the sources (Beamport does not: it warns).")
    ] = False,
    *,
    api: ApiOptions,
):
    """Snapshot a running streaming job; prints the snapshot (usually READY: the server waits up to ~30 s)."""
    body: dict = {}
    if ttl is not None:
        body["ttl"] = parse_ttl(ttl)
    if description:
        body["description"] = description
    if snapshot_sources:
        body["snapshotSources"] = True
    with api.session() as s:
        snapshot = s.client.snapshot_job(s.project, s.region, job_id, body)
        s.printer.document(snapshot)
        state, snapshot_id = snapshot.get("state"), snapshot.get("id")
        if state == "FAILED":
            s.printer.error(
                f"Snapshot [{snapshot_id}] failed; the job's messages say why: beamport jobs messages {job_id}"
            )
            raise typer.Exit(1)
        if state != "READY":
            s.printer.note(
                f"Snapshot [{snapshot_id}] is {state}: `beamport snapshots describe {snapshot_id}` shows "
                "when it is READY."
            )


@app.command("list")
@api_command
def list_snapshots(
    job: Annotated[str | None, typer.Option("--job", help="Only the snapshots of this job.")] = None,
    *,
    api: ApiOptions,
):
    """List the region's snapshots, newest first."""
    with api.session() as s:
        s.printer.snapshots(s.client.list_snapshots(s.project, s.region, job))


@app.command()
@api_command
def describe(
    snapshot_id: SnapshotId,
    *,
    api: ApiOptions,
):
    """Show a snapshot: its source job, state, size, creation time and time to live."""
    with api.session() as s:
        s.printer.document(s.client.get_snapshot(s.project, s.region, snapshot_id))


@app.command()
@api_command
def delete(
    snapshot_id: SnapshotId,
    *,
    api: ApiOptions,
):
    """Delete a snapshot and its data."""
    with api.session() as s:
        answer = s.client.delete_snapshot(s.project, s.region, snapshot_id)
        if api.format is Format.json:
            s.printer.document(answer)
        else:
            typer.echo(f"Deleted snapshot [{snapshot_id}].")
