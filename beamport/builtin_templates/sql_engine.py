"""How Beamport runs a GoogleSQL query over local files: DuckDB, an embedded SQL engine, with the query
translated from GoogleSQL (BigQuery's dialect) by sqlglot and each catalog table a view over its files.

Used by the SQL_Query template's pipeline (the query runs inside a DoFn) and by the service, to infer a
table's schema and to check a query's names and types against the catalog.

A table's files are given as a list (what the caller matched through the file policy; a pattern given as a
string is expanded here, for direct use): DuckDB never expands a pattern itself, and once the tables' views
exist it may open those files only (allowed_paths, enable_external_access off, the configuration locked), so a
query cannot read other files with DuckDB's own table functions (read_csv('/etc/passwd'), read_text, glob...).
"""

from __future__ import annotations

import glob
import re

FORMATS = ("csv", "jsonl", "parquet")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# DuckDB's types as GoogleSQL names them.
_GOOGLESQL_TYPES = {
    "BIGINT": "INT64",
    "INTEGER": "INT64",
    "SMALLINT": "INT64",
    "TINYINT": "INT64",
    "HUGEINT": "INT64",
    "UBIGINT": "INT64",
    "UINTEGER": "INT64",
    "DOUBLE": "FLOAT64",
    "FLOAT": "FLOAT64",
    "REAL": "FLOAT64",
    "VARCHAR": "STRING",
    "BOOLEAN": "BOOL",
    "DATE": "DATE",
    "TIMESTAMP": "DATETIME",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
    "TIME": "TIME",
    "BLOB": "BYTES",
}


def to_duckdb(query: str) -> str:
    """The GoogleSQL query in DuckDB's dialect."""
    import sqlglot

    (translated,) = sqlglot.transpile(query, read="bigquery", write="duckdb")
    return translated


def _files(path: str | list[str]) -> list[str]:
    """A table's files: the list given, or a pattern's matches."""
    files = sorted(glob.glob(path)) if isinstance(path, str) else list(path)
    if not files:
        raise ValueError(f"No file matches {path}")
    for file in files:
        if any(c in file for c in "*?[{"):  # DuckDB would take it for a pattern
            raise ValueError(f"{file}: a file name with * ? [ {{ cannot be read as a table's file")
    return files


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source(path: str | list[str], fmt: str) -> str:
    quoted = "[" + ", ".join(_literal(file) for file in _files(path)) + "]"
    if fmt == "csv":
        return f"read_csv_auto({quoted}, header = true)"
    if fmt == "jsonl":
        return f"read_json_auto({quoted}, format = 'newline_delimited')"
    if fmt == "parquet":
        return f"read_parquet({quoted})"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def _locked(connection, files: list[str]):
    """The connection, allowed to open these files only, for good."""
    connection.execute(f"SET allowed_paths = [{', '.join(_literal(file) for file in files)}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def connect(tables: dict[str, dict]):
    """A DuckDB connection where each table (name -> {path: files or a pattern, format}) is a view over its
    files, and no other file can be opened."""
    import duckdb

    connection = duckdb.connect()
    files = []
    for name, table in tables.items():
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a table name")
        files += _files(table["path"])
        connection.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {_source(table["path"], table["format"])}')
    return _locked(connection, files)


def describe(path: str | list[str], fmt: str) -> list[dict]:
    """The columns of files, as [{name, type}] with GoogleSQL types (inferred from the data)."""
    import duckdb

    connection = _locked(duckdb.connect(), _files(path))
    rows = connection.execute(f"DESCRIBE SELECT * FROM {_source(path, fmt)}").fetchall()
    return [{"name": row[0], "type": _GOOGLESQL_TYPES.get(row[1], row[1])} for row in rows]


def check(query: str, tables: dict[str, dict]) -> None:
    """Raise (duckdb.Error) when the query's columns or types do not fit the tables (DuckDB's binder)."""
    connect(tables).execute("EXPLAIN " + to_duckdb(query))


def run(query: str, tables: dict[str, dict]):
    """The query's result rows, as dicts."""
    cursor = connect(tables).execute(to_duckdb(query))
    names = [column[0] for column in cursor.description]
    for row in cursor.fetchall():
        yield dict(zip(names, row, strict=False))
