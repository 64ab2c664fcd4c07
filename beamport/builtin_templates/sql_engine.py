"""How Beamport runs a GoogleSQL query over local files: DuckDB, an embedded SQL engine, with the query
translated from GoogleSQL (BigQuery's dialect) by sqlglot and each catalog table a view over its files.

Used by the SQL_Query template's pipeline (the query runs inside a DoFn) and by the service, to infer a
table's schema and to check a query's names and types against the catalog.
"""

from __future__ import annotations

import re

FORMATS = ("csv", "jsonl", "parquet")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# DuckDB's types as GoogleSQL names them.
_GOOGLESQL_TYPES = {
    "BIGINT": "INT64", "INTEGER": "INT64", "SMALLINT": "INT64", "TINYINT": "INT64", "HUGEINT": "INT64",
    "UBIGINT": "INT64", "UINTEGER": "INT64", "DOUBLE": "FLOAT64", "FLOAT": "FLOAT64", "REAL": "FLOAT64",
    "VARCHAR": "STRING", "BOOLEAN": "BOOL", "DATE": "DATE", "TIMESTAMP": "DATETIME",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "TIME": "TIME", "BLOB": "BYTES",
}  # fmt: skip


def to_duckdb(query: str) -> str:
    """The GoogleSQL query in DuckDB's dialect."""
    import sqlglot

    (translated,) = sqlglot.transpile(query, read="bigquery", write="duckdb")
    return translated


def _source(path: str, fmt: str) -> str:
    quoted = "'" + path.replace("'", "''") + "'"
    if fmt == "csv":
        return f"read_csv_auto({quoted}, header = true)"
    if fmt == "jsonl":
        return f"read_json_auto({quoted}, format = 'newline_delimited')"
    if fmt == "parquet":
        return f"read_parquet({quoted})"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def connect(tables: dict[str, dict]):
    """A DuckDB connection where each table (name -> {path, format}) is a view over its files."""
    import duckdb

    connection = duckdb.connect()
    for name, table in tables.items():
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a table name")
        connection.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {_source(table["path"], table["format"])}')
    return connection


def describe(path: str, fmt: str) -> list[dict]:
    """The columns of files, as [{name, type}] with GoogleSQL types (inferred from the data)."""
    import duckdb

    rows = duckdb.connect().execute(f"DESCRIBE SELECT * FROM {_source(path, fmt)}").fetchall()
    return [{"name": row[0], "type": _GOOGLESQL_TYPES.get(row[1], row[1])} for row in rows]


def check(query: str, tables: dict[str, dict]) -> None:
    """Raise (duckdb.Error) when the query's columns or types do not fit the tables (DuckDB's binder)."""
    connect(tables).execute("EXPLAIN " + to_duckdb(query))


def run(query: str, tables: dict[str, dict]):
    """The query's result rows, as dicts."""
    cursor = connect(tables).execute(to_duckdb(query))
    names = [column[0] for column in cursor.description]
    for row in cursor.fetchall():
        yield dict(zip(names, row))
