"""Dataflow SQL: `sql.validate` (is this GoogleSQL query one Dataflow SQL could run, does it read an
unbounded source, do its columns and types fit the catalog's tables?), a catalog of local tables, and SQL
queries that run as jobs (the SQL_Query built-in template: the query runs on DuckDB inside the pipeline).

The parser is bqsqlparse, a GoogleSQL (BigQuery standard SQL) parser in pure Python, chosen over sqlglot
(which accepts queries GoogleSQL refuses) and over a WebAssembly build of ZetaSQL (which needs protobuf 7,
where Beam needs 6, and takes 15 s to start): docs/sql.md records the comparison.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import orjson

from beamport import wire
from beamport.builtin_templates import sql_engine
from beamport.errors import ApiError, invalid_argument, not_found
from beamport.files import FilePolicy, scheme_of
from beamport.store.base import Store
from beamport.store.sql_tables import SqlTableRecord

if TYPE_CHECKING:
    from beamport.service.templates import TemplateService

MAX_QUERY_BYTES = 1 << 20
# How deep a query may nest parentheses and brackets: the parser is recursive (it gives up near 65 levels
# of parentheses), and no real query comes near this.
MAX_NESTING = 40
# Dataflow SQL's unbounded sources: pubsub.topic.`project`.`topic` (and subscriptions).
_UNBOUNDED_PREFIXES = (("pubsub", "topic"), ("pubsub", "subscription"))


def _query_text(query: object) -> str:
    """The query a request gives, or INVALID_ARGUMENT."""
    if not isinstance(query, str) or not query.strip():
        raise invalid_argument("query is required: the GoogleSQL query (a string).")
    return query


class SqlService:
    def __init__(self, store: Store, files: FilePolicy, templates: TemplateService):
        self.store = store
        self.files = files
        self.templates = templates  # TemplateService: SQL jobs are SQL_Query template launches

    # -- sql.validate -----------------------------------------------------------------------

    def validate(self, project_id: str, location: str, query: str | None) -> dict:
        """ValidateResponse: `queryInfo` when the query is valid, `errorMessage` (with line and column)
        when it is not."""
        query = _query_text(query)
        error, paths = self._parse(query)
        if error:
            return {"errorMessage": error}
        tables = self._catalog(project_id, paths)
        if tables is not None:  # every table is in the catalog: check names and types too
            error = self._check_against(query, tables)
            if error:
                return {"errorMessage": error}
        properties = ["HAS_UNBOUNDED_SOURCE"] if any(_is_unbounded(path) for path in paths) else []
        return {"queryInfo": {"queryProperty": properties} if properties else {}}

    def _parse(self, query: str) -> tuple[str | None, list[list[str]]]:
        """(an error message, or None) and the paths of the tables the query reads."""
        import bqsqlparse  # imported only for the SQL calls

        if len(query.encode()) > MAX_QUERY_BYTES:
            raise invalid_argument(f"The query is over {MAX_QUERY_BYTES} bytes.")
        depth = _nesting(query)
        if depth > MAX_NESTING:
            raise invalid_argument(
                f"The query nests parentheses or brackets {depth} levels deep; at most {MAX_NESTING} are allowed."
            )
        try:
            statements = bqsqlparse.parse(query)
        except bqsqlparse.BQSQLError as exc:
            return _syntax_error(exc), []
        except (AttributeError, IndexError, TypeError, ValueError):  # the parser's lexer on what it does not know
            return "Syntax error: the query has characters or a construct GoogleSQL does not accept.", []
        except RecursionError:  # deep nesting without brackets (NOT NOT NOT ..., - - - ...)
            raise invalid_argument("The query nests too deeply to be parsed.") from None
        try:
            return self._read(statements)
        except RecursionError:
            raise invalid_argument("The query nests too deeply to be parsed.") from None

    @staticmethod
    def _read(statements: list) -> tuple[str | None, list[list[str]]]:
        if len(statements) != 1:
            return f"Expected one query, got {len(statements)} statements.", []
        (statement,) = statements
        if type(statement).__name__ != "Query":
            kind = type(statement).__name__.removesuffix("Stmt")
            return f"Only a query (SELECT) can run as Dataflow SQL; this is a {kind} statement.", []
        ctes = {cte.name.lower() for cte in _nodes(statement, "CTE")}
        return None, [path for path in _table_paths(statement) if path != [] and ".".join(path) not in ctes]

    def _catalog(self, project_id: str, paths: list[list[str]]) -> dict[str, dict] | None:
        """The catalog's tables the query reads ({name: {path, format}}), or None if one is not in it."""
        if not paths or any(len(path) != 1 for path in paths):
            return None
        names = {path[0] for path in paths}
        found = {t.name.lower(): t for t in self.store.sql_tables.list(project_id)}
        if not names <= set(found):
            return None
        return {found[name].name: {"path": found[name].path, "format": found[name].format} for name in names}

    def _check_against(self, query: str, tables: dict[str, dict]) -> str | None:
        try:  # each table's files now, through the policy: DuckDB opens only those
            resolved = {name: {"path": self._files(t["path"]), "format": t["format"]} for name, t in tables.items()}
        except ApiError as exc:
            if exc.status != "INVALID_ARGUMENT":
                raise
            return f"Invalid query for the catalog's tables: {exc.message}"
        try:
            sql_engine.check(query, resolved)
        except Exception as exc:  # DuckDB's binder: a column or function that does not fit
            return f"Invalid query for the catalog's tables: {str(exc).splitlines()[0]}"
        return None

    # -- the catalog --------------------------------------------------------------------------

    def add_table(self, project_id: str, body: dict) -> dict:
        """Add (or replace) a table: a name, files (a path or glob under the allowed roots), a format, and a
        schema ([{name, type}]) or none, to infer it from the files."""
        if not isinstance(body, dict):
            raise invalid_argument("Expected a table object.")
        name, path, fmt = body.get("name"), body.get("path"), body.get("format")
        if not isinstance(name, str) or not sql_engine.NAME_RE.match(name):
            raise invalid_argument(f"Invalid table name {name!r}: letters, digits and underscores.")
        if fmt not in sql_engine.FORMATS:
            raise invalid_argument(f"format must be one of {', '.join(sql_engine.FORMATS)}, not {fmt!r}.")
        if not isinstance(path, str) or not path:
            raise invalid_argument("path is required: the table's files (a path or a glob).")
        if scheme_of(path) == "gs":
            raise invalid_argument(f"{path}: a table's files are local files (a path or a glob, or a file:// URL).")
        path = self.files.check_pattern(path)  # the canonical pattern: what the catalog keeps, and jobs read
        files = self._files(path)
        try:
            inferred = sql_engine.describe(files, fmt)
        except Exception as exc:
            raise invalid_argument(f"Cannot read {path} as {fmt}: {str(exc).splitlines()[0]}") from None
        columns = body.get("schema") or inferred
        if not isinstance(columns, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"] for c in columns
        ):
            raise invalid_argument("schema must be a list of {name, type}.")
        missing = {c["name"] for c in columns} - {c["name"] for c in inferred}
        if missing:
            raise invalid_argument(f"The files of {name} have no column {sorted(missing)[0]!r}.")
        record = SqlTableRecord(project_id, name, path, fmt, orjson.dumps(columns).decode(), wire.now_us())
        self.store.sql_tables.put(record)
        return _render_table(record)

    def list_tables(self, project_id: str) -> dict:
        return {"tables": [_render_table(t) for t in self.store.sql_tables.list(project_id)]}

    def get_table(self, project_id: str, name: str) -> dict:
        found = self.store.sql_tables.list(project_id, [name])
        if not found:
            raise not_found(f"There is no table {name!r} in project {project_id}'s SQL catalog.")
        return _render_table(found[0])

    def delete_table(self, project_id: str, name: str) -> dict:
        if not self.store.sql_tables.delete(project_id, name):
            raise not_found(f"There is no table {name!r} in project {project_id}'s SQL catalog.")
        return {}

    # -- SQL jobs -------------------------------------------------------------------------------

    def query(self, project_id: str, location: str, body: dict) -> dict:
        """Run a query as a job (`gcloud dataflow sql query`'s equivalent): {query, jobName, output,
        outputFormat}. Every table must be in the catalog; nothing is created otherwise."""
        if not isinstance(body, dict):
            raise invalid_argument("Expected a query object.")
        query, job_name, output = body.get("query"), body.get("jobName"), body.get("output")
        fmt = body.get("outputFormat") or "jsonl"
        query = _query_text(query)
        error, paths = self._parse(query)
        if error:
            raise invalid_argument(error)
        if not job_name:
            raise invalid_argument("jobName is required.")
        if not output:
            raise invalid_argument("output is required: the prefix of the result files.")
        if fmt not in ("jsonl", "csv"):
            raise invalid_argument(f"outputFormat must be jsonl or csv, not {fmt!r}.")
        if not paths:
            raise invalid_argument("The query reads no table.")
        tables = self._catalog(project_id, paths)
        if tables is None:
            known = [t.name for t in self.store.sql_tables.list(project_id)]
            unknown = next(".".join(p) for p in paths if len(p) != 1 or p[0] not in {k.lower() for k in known})
            raise invalid_argument(
                f"Unknown table {unknown!r}: add it to the catalog (beamport sql tables add); "
                f"the catalog has {', '.join(known) or 'no tables'}."
            )
        for table in tables.values():  # the policy may have changed since it was added
            table["path"] = self.files.check_pattern(table["path"])
        error = self._check_against(query, tables)
        if error:
            raise invalid_argument(error)
        parameters = {"query": query, "tables": json.dumps(tables), "outputPrefix": output, "outputFormat": fmt}
        return self.templates.launch_internal(project_id, location, "SQL_Query", job_name, parameters)

    def _files(self, pattern: str) -> list[str]:
        """The files of a table now, each allowed by the policy; at least one."""
        files = self.files.match(pattern)
        if not files:
            raise invalid_argument(f"No file matches {pattern}.")
        return files


def _nesting(query: str) -> int:
    """The deepest nesting of parentheses and brackets in a query, outside its strings, quoted names and
    comments (an upper bound is enough: this only guards the parser)."""
    if query.count("(") + query.count("[") <= MAX_NESTING:
        return query.count("(") + query.count("[")
    depth = deepest = 0
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "'\"`":
            end = query.find(c, i + 1)
            while end != -1 and query[end - 1] == "\\":
                end = query.find(c, end + 1)
            i = n if end == -1 else end + 1
            continue
        if c == "-" and query.startswith("--", i) or c == "#":
            end = query.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        if c == "/" and query.startswith("/*", i):
            end = query.find("*/", i + 2)
            i = n if end == -1 else end + 2
            continue
        if c in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")]":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def _syntax_error(exc: Exception) -> str:
    """The parser's message, in ZetaSQL's form: "Syntax error: ... [at LINE:COLUMN]"."""
    line, column = getattr(exc, "line", None), getattr(exc, "col", None)
    if line is not None and column is not None:
        return f"Syntax error: {getattr(exc, 'message', exc)} [at {line}:{column}]"
    return f"Syntax error: {exc}"


def _render_table(table: SqlTableRecord) -> dict:
    return {
        "name": table.name,
        "path": table.path,
        "format": table.format,
        "schema": orjson.loads(table.schema),
        "createTime": wire.format_timestamp_us(table.create_us),
    }


def _nodes(node, kind: str):
    """Every node of this class name in the tree."""
    if type(node).__name__ == kind:
        yield node
    if dataclasses.is_dataclass(node):
        for field in dataclasses.fields(node):
            yield from _nodes(getattr(node, field.name), kind)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item, kind)


def _table_paths(node) -> list[list[str]]:
    """The paths of every table the statement reads (subqueries included)."""
    return [[str(part).lower() for part in ref.path] for ref in _nodes(node, "TableRef")]


def _is_unbounded(path: list[str]) -> bool:
    return any(tuple(path[: len(prefix)]) == prefix for prefix in _UNBOUNDED_PREFIXES)
