"""`beamport sql ...`: validate GoogleSQL, keep a catalog of local tables, run queries as jobs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from beamport.cli.options import ApiOptions, api_command
from beamport.cli.output import Format

app = typer.Typer(help="GoogleSQL: validate queries, keep a table catalog, run queries as jobs.", no_args_is_help=True)
tables_app = typer.Typer(help="The catalog of local tables SQL queries read.", no_args_is_help=True)
app.add_typer(tables_app, name="tables")

Query = Annotated[str, typer.Argument(help="The GoogleSQL query.", show_default=False)]
TableName = Annotated[str, typer.Argument(help="The table's name (letters, digits, _).", show_default=False)]


class TableFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class ResultFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def parse_schema(text: str | None) -> list[dict] | None:
    """--schema name:TYPE,name:TYPE"""
    if not text:
        return None
    columns = []
    for part in text.split(","):
        name, sep, kind = part.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{part!r} is not NAME:TYPE", param_hint="'--schema'")
        columns.append({"name": name.strip(), "type": kind.strip().upper()})
    return columns


@app.command()
@api_command
def validate(
    query: Query,
    *,
    api: ApiOptions,
):
    """Validate a query (sql.validate): exit 1 with the error and its position when it is not valid."""
    with api.session() as s:
        answer = s.client.validate_sql(s.project, s.region, query)
        s.printer.document(answer)
        if answer.get("errorMessage"):
            raise typer.Exit(1)


@app.command()
@api_command
def query(
    query: Query,
    job_name: Annotated[str, typer.Option("--job-name", help="The job's name.")],
    output: Annotated[str, typer.Option("--output", help="The prefix of the result files.")],
    output_format: Annotated[ResultFormat, typer.Option(help="jsonl or csv (no header).")] = ResultFormat.jsonl,
    *,
    api: ApiOptions,
):
    """Run a query as a job over the catalog's tables (like `gcloud dataflow sql query`)."""
    body = {"query": query, "jobName": job_name, "output": output, "outputFormat": output_format.value}
    with api.session() as s:
        s.printer.job(s.client.sql_query(s.project, s.region, body))


@tables_app.command("add")
@api_command
def add_table(
    name: TableName,
    path: Annotated[str, typer.Option("--path", help="The table's files: a path or a glob.")],
    table_format: Annotated[TableFormat, typer.Option("--table-format", help="csv, jsonl or parquet.")],
    schema: Annotated[str | None, typer.Option(help="NAME:TYPE,... (default: inferred from the files).")] = None,
    *,
    api: ApiOptions,
):
    """Add a table to the catalog (or replace the one of that name); prints it, with its schema."""
    body = {"name": name, "path": path, "format": table_format.value, "schema": parse_schema(schema)}
    with api.session() as s:
        s.printer.document(s.client.add_sql_table(s.project, body))


@tables_app.command("list")
@api_command
def list_tables(*, api: ApiOptions):
    """List the catalog's tables."""
    with api.session() as s:
        tables = s.client.list_sql_tables(s.project)
        if api.format is Format.json:
            s.printer.document({"tables": tables})
        elif not tables:
            s.printer.note("Listed 0 items.")
        else:
            for table in tables:
                columns = ", ".join(f"{c['name']} {c['type']}" for c in table["schema"])
                typer.echo(f"{table['name']}\t{table['format']}\t{table['path']}\t({columns})")


@tables_app.command("describe")
@api_command
def describe_table(name: TableName, *, api: ApiOptions):
    """Show a table: its files, format and schema."""
    with api.session() as s:
        s.printer.document(s.client.get_sql_table(s.project, name))


@tables_app.command("remove")
@api_command
def remove_table(name: TableName, *, api: ApiOptions):
    """Remove a table from the catalog (its files stay)."""
    with api.session() as s:
        s.client.delete_sql_table(s.project, name)
        s.printer.note(f"Removed the table {name}.")
