"""Entry point of the `beamport` command."""

from __future__ import annotations

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
):
    """Serve the Dataflow v1b3 REST API."""
    from beamport.server import serve as run

    run(
        Settings(
            host=host,
            port=port,
            data_dir=data_dir,
            database_url=database_url,
            max_request_bytes=max_request_bytes,
            log_level=log_level,
        )
    )


def main() -> None:
    app()
