"""`beamport emulators ...`: the Google service emulators `beamport serve --emulators` runs (docs/emulators.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from beamport import emulators

app = typer.Typer(help="The Google service emulators `beamport serve --emulators` runs.", no_args_is_help=True)

DataDir = Annotated[
    Path,
    typer.Option(envvar="BEAMPORT_DATA_DIR", help="The server's data dir (or BEAMPORT_DATA_DIR)."),
]


@app.command("env")
def env(data_dir: DataDir = Path("beamport-data")) -> None:
    """Print the variables that name the running server's emulators (`eval "$(beamport emulators env)"`)."""
    path = data_dir / emulators.ENV_FILE
    try:
        typer.echo(path.read_text(), nl=False)
    except FileNotFoundError:
        typer.echo(f"error: no {path}: no `beamport serve --emulators ...` is running on this data dir", err=True)
        raise typer.Exit(1) from None


@app.command("install")
def install(
    names: Annotated[list[str] | None, typer.Argument(help="Emulators to build or install (default: all).")] = None,
    bin_dir: Annotated[
        Path | None,
        typer.Option(envvar="BEAMPORT_EMULATOR_BIN_DIR", help="Where they are cached (default ~/.cache/beamport/bin)."),
    ] = None,
) -> None:
    """Build or install the emulators now (once per version; `serve` does it on first use) and print their paths."""
    try:
        chosen = [n for n in emulators.parse_names(names or list(emulators.EMULATORS)) if n in emulators.EMULATORS]
        for name in chosen:
            typer.echo(emulators.install(emulators.EMULATORS[name], bin_dir or emulators.default_bin_dir(os.environ)))
    except (ValueError, emulators.EmulatorError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
