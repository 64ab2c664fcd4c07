"""How the `beamport jobs` commands show jobs and messages: a readable table/text view, or JSON.

It knows the shape of Dataflow's Job and JobMessage objects, and nothing about HTTP.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import TextIO

from rich.console import Console
from rich.table import Table

from beamport import wire


class Format(StrEnum):
    table = "table"
    json = "json"


def short_enum(value: str | None, prefix: str) -> str:
    """JOB_STATE_PENDING -> Pending, JOB_TYPE_STREAMING -> Streaming, as gcloud shows them."""
    if not value:
        return "Unknown"
    if value.startswith(prefix):
        value = value[len(prefix) :]
    return value.replace("_", " ").capitalize()


def short_time(value: str | None, precision: str = "seconds") -> str:
    """An RFC 3339 timestamp (UTC) as '2024-05-01 12:34:56' (or with '.123' for milliseconds)."""
    if not value:
        return "-"
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    if precision == "milliseconds":
        text += f".{dt.microsecond // 1000:03d}"
    return text


# -- nested JSON as YAML ------------------------------------------------------------

# Strings outside this plain set (or that read as numbers) are double-quoted, as `beamport` always showed them
# (`- "serviceAccount:dev@p.iam.gserviceaccount.com"`): YAML alone would leave many of them plain.
_PLAIN = re.compile(r"[A-Za-z0-9_./@(][-A-Za-z0-9_./@()+, ]*\Z")
_NUMBER = re.compile(r"[-+]?(\d[\d_]*)?\.?\d*([eE][-+]?\d+)?\Z")


@functools.cache
def _yaml_dumper() -> type:
    """yaml.SafeDumper with lists indented under their key and double quotes where a string needs quotes. Built
    (and PyYAML imported) on the first YAML answer: `beamport serve` goes through this CLI and never prints one."""
    import yaml

    class YamlDumper(yaml.SafeDumper):
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)  # `key:` then `  - item`, not `- item` level with the key

        def choose_scalar_style(self):
            style = super().choose_scalar_style()
            return '"' if style == "'" else style  # JSON's quotes, which readers of the JSON answers know

    def represent_str(dumper: yaml.SafeDumper, text: str):
        plain = _PLAIN.match(text) and not _NUMBER.match(text)
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=None if plain else '"')

    YamlDumper.add_representer(str, represent_str)
    return YamlDumper


def yaml_lines(value) -> list[str]:
    """An API answer as YAML, one line per item, in the answer's order and never wrapped."""
    import yaml

    text = yaml.dump(
        value, Dumper=_yaml_dumper(), sort_keys=False, default_flow_style=False, allow_unicode=True, width=float("inf")
    )
    return text.splitlines()


# -- the printer ----------------------------------------------------------------


class Printer:
    """Writes results to stdout in the chosen format; notes and errors go to stderr."""

    def __init__(self, format: Format = Format.table, out: TextIO | None = None, err: TextIO | None = None):
        self.format = Format(format)
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def _write(self, text: str, stream: TextIO | None = None) -> None:
        stream = stream or self.out
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()

    def _json(self, value) -> None:
        self._write(json.dumps(value, indent=2, ensure_ascii=False))

    def note(self, text: str) -> None:
        self._write(text, self.err)

    def error(self, text: str) -> None:
        self._write(f"ERROR: {text}", self.err)

    def _table(self, table: Table) -> None:
        # Columns keep their natural width, as gcloud's and kubectl's do: a job id is never cut,
        # a narrow terminal wraps the line instead. Colors only on a terminal (rich's default).
        console = Console(file=self.out, width=100_000, highlight=False)
        with console.capture() as capture:
            console.print(table)
        self._write("\n".join(line.rstrip() for line in capture.get().splitlines()))

    # -- jobs ---------------------------------------------------------------

    def jobs(self, jobs: list[dict]) -> None:
        if self.format is Format.json:
            self._json(jobs)
            return
        if not jobs:
            self.note("Listed 0 items.")
            return
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for column in ("JOB_ID", "NAME", "TYPE", "STATE", "REGION", "CREATED (UTC)"):
            table.add_column(column, no_wrap=True)
        for job in jobs:
            table.add_row(
                job.get("id", ""),
                job.get("name", ""),
                short_enum(job.get("type"), "JOB_TYPE_"),
                short_enum(job.get("currentState"), "JOB_STATE_"),
                job.get("location", ""),
                short_time(job.get("createTime")),
            )
        self._table(table)

    # -- snapshots ----------------------------------------------------------

    def snapshots(self, snapshots: list[dict]) -> None:
        if self.format is Format.json:
            self._json(snapshots)
            return
        if not snapshots:
            self.note("Listed 0 items.")
            return
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for column in ("SNAPSHOT_ID", "SOURCE_JOB_ID", "STATE", "SIZE", "CREATED (UTC)", "TTL", "DESCRIPTION"):
            table.add_column(column, no_wrap=True)
        for snapshot in snapshots:
            size = snapshot.get("diskSizeBytes")
            table.add_row(
                snapshot.get("id", ""),
                snapshot.get("sourceJobId", ""),
                snapshot.get("state", ""),
                _bytes(int(size)) if size is not None else "-",
                short_time(snapshot.get("creationTime")),
                _duration(snapshot.get("ttl")),
                snapshot.get("description", ""),
            )
        self._table(table)

    # -- workers ------------------------------------------------------------

    def workers(self, workers: list[dict], now_us: int) -> None:
        if self.format is Format.json:
            self._json(workers)
            return
        if not workers:
            self.note("Listed 0 items.")
            return
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for column in ("WORKER_ID", "JOB_ID", "STATE", "HEALTH", "CPU", "UPTIME", "WORK_ITEM", "LAST_REPORT"):
            table.add_column(column, no_wrap=True)
        for worker in workers:
            table.add_row(
                worker.get("workerId", ""),
                worker.get("jobId") or "-",  # none yet: it waits for its first work
                worker.get("state", ""),
                _health(worker),
                f"{worker['cpu']['rate'] * 100:.1f}%" if worker.get("cpu") else "-",
                _age(worker.get("containerStartTime") or worker.get("firstSeenTime"), now_us),
                worker.get("workItemId", "-")
                + (f" ({worker['workItemProgress']:.0%})" if "workItemProgress" in worker else ""),
                _age(worker.get("lastSeenTime"), now_us) + " ago",
            )
        self._table(table)

    def document(self, value: dict | list) -> None:
        """Any API answer: JSON, or YAML."""
        if self.format is Format.json:
            self._json(value)
            return
        self._write("\n".join(yaml_lines(value)))

    def job(self, job: dict) -> None:
        if self.format is Format.json:
            self._json(job)
        else:
            self._write("\n".join(yaml_lines(job)))

    def state_change(self, job: dict, job_id: str, action: str, requested_state: str) -> None:
        """The answer to a cancel or drain: `action` is 'cancel' or 'drain'."""
        if self.format is Format.json:
            self._json(job)
            return
        state = job.get("currentState", "JOB_STATE_UNKNOWN")
        done = {"cancel": "Cancelled", "drain": "Drained"}[action]
        if state == requested_state:
            self._write(f"{done} job [{job_id}]; state: {state}")
        else:
            self._write(f"Requested {action} of job [{job_id}]; state: {state}")

    # -- messages -------------------------------------------------------------

    def messages(self, messages: Iterable[dict]) -> None:
        for message in messages:
            self.message(message)

    def message(self, message: dict) -> None:
        if self.format is Format.json:
            self._write(json.dumps(message, ensure_ascii=False))
            return
        importance = short_enum(message.get("messageImportance"), "JOB_MESSAGE_").upper()
        prefix = f"{short_time(message.get('time'), 'milliseconds')}  {importance:<8}  "
        text = message.get("messageText", "")
        continuation = "\n" + " " * len(prefix)
        self._write(prefix + continuation.join(text.splitlines() or [""]))


_LIVE_WORKER_STATES = ("RUNNING", "UNHEALTHY", "IDLE")


def _health(worker: dict) -> str:
    """From the worker's last health report, while it is live; a gone worker's report is history, whatever it said."""
    health = worker.get("health")
    if worker.get("state") == "BROKEN" or (health or {}).get("vmIsBroken"):
        return "broken: " + ((health or {}).get("msg") or worker.get("reason", ""))
    if worker.get("state") not in _LIVE_WORKER_STATES or not health:
        return "-"
    if health.get("vmIsHealthy") is False:
        return "unhealthy: " + health.get("msg", "")
    return "healthy"


def _age(value: str | None, now_us: int) -> str:
    """How long ago an RFC 3339 time was, as 3s, 5m02s, 2h05m."""
    if not value:
        return "-"
    from beamport.cli.client import parse_time_us

    seconds = max(0, (now_us - parse_time_us(value)) // 1_000_000)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _bytes(n: int) -> str:
    """A size as 512 B, 1.5 KiB, 20.0 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _duration(value: str | None) -> str:
    """A Duration's JSON form ("604800s") as 7d, 1h30m, 45s."""
    if not value:
        return "-"
    try:
        seconds = round(wire.parse_duration_us(value) / 1_000_000)
    except ValueError:
        return value
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)
