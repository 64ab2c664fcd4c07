"""`beamport jobs ...`: client commands over the HTTP API."""

import typer

app = typer.Typer(help="List, describe and steer jobs on a Beamport (or Dataflow) endpoint.", no_args_is_help=True)
