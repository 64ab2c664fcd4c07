"""Dataflow SQL's `sql.validate`: is this GoogleSQL query one Dataflow SQL could run, and does it read an
unbounded source?

The parser is bqsqlparse, a GoogleSQL (BigQuery standard SQL) parser in pure Python, chosen over sqlglot
(which accepts queries GoogleSQL refuses) and over a WebAssembly build of ZetaSQL (which needs protobuf 7,
where Beam needs 6, and takes 15 s to start): docs/sql.md records the comparison.
"""

from __future__ import annotations

import dataclasses

from beamport.errors import invalid_argument

MAX_QUERY_BYTES = 1 << 20
# Dataflow SQL's unbounded sources: pubsub.topic.`project`.`topic` (and subscriptions).
_UNBOUNDED_PREFIXES = (("pubsub", "topic"), ("pubsub", "subscription"))


class SqlService:
    def validate(self, project_id: str, location: str, query: str | None) -> dict:
        """ValidateResponse: `queryInfo` when the query is valid, `errorMessage` (with line and column)
        when it is not."""
        import bqsqlparse  # a second's import, only for the SQL calls

        if not query or not query.strip():
            raise invalid_argument("query is required: the GoogleSQL query to validate.")
        if len(query.encode()) > MAX_QUERY_BYTES:
            raise invalid_argument(f"The query is over {MAX_QUERY_BYTES} bytes.")
        try:
            statements = bqsqlparse.parse(query)
        except bqsqlparse.BQSQLError as exc:
            return {"errorMessage": _syntax_error(exc)}
        if len(statements) != 1:
            return {"errorMessage": f"Expected one query, got {len(statements)} statements."}
        (statement,) = statements
        if type(statement).__name__ != "Query":
            kind = type(statement).__name__.removesuffix("Stmt")
            return {"errorMessage": f"Only a query (SELECT) can run as Dataflow SQL; this is a {kind} statement."}
        properties = ["HAS_UNBOUNDED_SOURCE"] if any(_is_unbounded(path) for path in _table_paths(statement)) else []
        return {"queryInfo": {"queryProperty": properties} if properties else {}}


def _syntax_error(exc: Exception) -> str:
    """The parser's message, in ZetaSQL's form: "Syntax error: ... [at LINE:COLUMN]"."""
    line, column = getattr(exc, "line", None), getattr(exc, "col", None)
    if line is not None and column is not None:
        return f"Syntax error: {getattr(exc, 'message', exc)} [at {line}:{column}]"
    return f"Syntax error: {exc}"


def _table_paths(node):
    """The paths of every table the statement reads (TableRef nodes, subqueries included)."""
    if type(node).__name__ == "TableRef":
        yield [str(part).lower() for part in node.path]
    if dataclasses.is_dataclass(node):
        for field in dataclasses.fields(node):
            yield from _table_paths(getattr(node, field.name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _table_paths(item)


def _is_unbounded(path: list[str]) -> bool:
    return any(tuple(path[: len(prefix)]) == prefix for prefix in _UNBOUNDED_PREFIXES)
