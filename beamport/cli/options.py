"""The options every command that calls the API takes, defined once: --endpoint, --project, --region, --format.

A command declares a keyword-only parameter `api: ApiOptions` and is decorated with `api_command`, which puts
the four options in its place (after the command's own), each with its BEAMPORT_* variable, and hands the
command their values as one ApiOptions. tests/test_cli.py walks the command tree so that no command forgets them.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from beamport.cli.client import DEFAULT_ENDPOINT, DEFAULT_REGION, ClientError, ConnectionFailure, DataflowClient
from beamport.cli.output import Format, Printer

# The options, by the name of the parameter each becomes, and the variable each defaults from.
ENVIRONMENT = {
    "endpoint": "BEAMPORT_ENDPOINT",
    "project": "BEAMPORT_PROJECT",
    "region": "BEAMPORT_REGION",
    "format": "BEAMPORT_FORMAT",
}
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
PARAMETERS = (
    inspect.Parameter(
        "endpoint",
        _KEYWORD,
        default=DEFAULT_ENDPOINT,
        annotation=Annotated[
            str,
            typer.Option(
                "--endpoint", envvar=ENVIRONMENT["endpoint"], help="Root URL of the Dataflow API.", show_default=True
            ),
        ],
    ),
    inspect.Parameter(
        "project",
        _KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--project",
                envvar=ENVIRONMENT["project"],
                help="Project id (the commands on a project's resources require one).",
            ),
        ],
    ),
    inspect.Parameter(
        "region",
        _KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(
                "--region",
                envvar=ENVIRONMENT["region"],
                help=f"Region (location) of the jobs (default: {DEFAULT_REGION}; for workers list: every region).",
            ),
        ],
    ),
    inspect.Parameter(
        "format",
        _KEYWORD,
        default=Format.table,
        annotation=Annotated[
            Format, typer.Option("--format", envvar=ENVIRONMENT["format"], help="table (readable) or json.")
        ],
    ),
)
NAMES = tuple("--" + p.name for p in PARAMETERS)


class Session:
    def __init__(self, client: DataflowClient, printer: Printer, project: str, region: str):
        self.client, self.printer, self.project, self.region = client, printer, project, region


@contextmanager
def session(endpoint: str, project: str | None, region: str, format: Format, need_project=True) -> Iterator[Session]:
    """A client and a printer for one command; expected failures become a message and an exit code."""
    if need_project and not project:
        raise typer.BadParameter("no project set: pass --project or set BEAMPORT_PROJECT.", param_hint="'--project'")
    printer = Printer(format)
    try:
        client = DataflowClient(endpoint)
    except ClientError as exc:
        printer.error(str(exc))
        raise typer.Exit(1) from None
    try:
        yield Session(client, printer, project or "", region)  # "": a command that needs no project has none
    except ConnectionFailure as exc:
        printer.error(f"{exc}. Is a server listening there? (Set it with --endpoint or BEAMPORT_ENDPOINT.)")
        raise typer.Exit(1) from None
    except ClientError as exc:
        printer.error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        printer.note("")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    finally:
        client.close()


@dataclass(frozen=True)
class ApiOptions:
    endpoint: str
    project: str | None
    region: str | None  # None: not given (the command's default: us-central1, or every region)
    format: Format

    def session(self, need_project: bool = True) -> AbstractContextManager[Session]:
        """A client and a printer for the command, in the region given, else us-central1."""
        return session(self.endpoint, self.project, self.region or DEFAULT_REGION, self.format, need_project)


def api_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """The command `function` (whose keyword-only `api: ApiOptions` receives them) with the four shared options."""
    signature = inspect.signature(function, eval_str=True)
    if "api" not in signature.parameters:
        raise TypeError(f"{function.__name__} takes no `api: ApiOptions` parameter")
    own = [p for p in signature.parameters.values() if p.name != "api"]

    @functools.wraps(function)
    def command(*args, endpoint: str, project: str | None, region: str | None, format: Format, **kwargs):
        return function(*args, api=ApiOptions(endpoint, project, region, format), **kwargs)

    # What typer reads: the command's own parameters, then the shared ones (with real, not string, annotations).
    command.__signature__ = signature.replace(parameters=[*own, *PARAMETERS])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in (*own, *PARAMETERS)}
    del command.__wrapped__  # typer must see this signature, not the function's
    return command
