"""sql.validate, through google-api-python-client built from the 2.70.0 discovery document (the last that
carries the `sql` resource), against a running server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

DOCUMENT = Path(__file__).parent / "data" / "dataflow.v1b3-from-google-api-python-client-2.70.0.json"


@pytest.fixture
def sql(server):
    client = build_from_document(json.loads(DOCUMENT.read_text()), credentials=AnonymousCredentials(),
                                 client_options={"api_endpoint": server.url})  # fmt: skip
    return client.projects().locations().sql()


def validate(sql, project, query):
    return sql.validate(projectId=project, location="us-central1", query=query).execute()


@pytest.mark.parametrize("query", [
    "SELECT a, COUNT(*) AS n FROM t GROUP BY a",
    "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id WHERE t.a > 1",
    "SELECT a, SUM(b) OVER (PARTITION BY a ORDER BY c ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "SELECT STRUCT(1 AS a, 'x' AS b), ARRAY<INT64>[1, 2]",
])  # fmt: skip
def test_valid_queries_answer_query_info_and_no_error(sql, project, query):
    assert validate(sql, project, query) == {"queryInfo": {}}


@pytest.mark.parametrize("query, message", [
    ("SELECT FROM t", "[at 1:8]"),
    ("SELECT a FROM t WHERE", "[at 1:22]"),
    ("SELECT a,\n  b FROM t GROUP", "Expected BY"),
    ("SELECT a,\n  b FROM t GROUP", "[at 2:17]"),
    ("SELECT (1 + FROM t", "[at 1:13]"),
    ("SELECT 'unterminated FROM t", "Unterminated string literal [at 1:8]"),
    ("SELEC 1", "[at 1:1]"),
    ("DELETE FROM t WHERE a = 1", "Only a query (SELECT)"),
    ("CREATE TABLE t (a INT64)", "Only a query (SELECT)"),
    ("SELECT 1; SELECT 2", "Expected one query"),
])  # fmt: skip
def test_invalid_queries_answer_the_error_with_its_position(sql, project, query, message):
    answer = validate(sql, project, query)
    assert set(answer) == {"errorMessage"} and message in answer["errorMessage"], answer


def test_unbounded_sources_are_flagged(sql, project):
    unbounded = {"queryInfo": {"queryProperty": ["HAS_UNBOUNDED_SOURCE"]}}
    assert validate(sql, project, "SELECT * FROM pubsub.topic.`my-project`.`my-topic`") == unbounded
    assert validate(sql, project, "SELECT x FROM (SELECT * FROM pubsub.subscription.`p`.`s`) WHERE x > 1") == unbounded
    assert validate(sql, project, "SELECT * FROM `my-project.dataset.table`") == {"queryInfo": {}}


def test_bad_requests_are_refused(sql, project, server):
    import httpx

    for query in ("", "   "):
        with pytest.raises(HttpError) as refused:
            validate(sql, project, query)
        assert refused.value.resp.status == 400
    path = f"{server.url}/v1b3/projects/{project}/locations/us-central1/sql:validate"
    assert httpx.get(path).json()["error"]["status"] == "INVALID_ARGUMENT"  # no query at all
    # A query over 1 MiB (sent raw: client libraries refuse such URLs themselves): a 4xx, and the server lives.
    import socket
    from urllib.parse import quote, urlsplit

    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    target = urlsplit(path).path + "?query=" + quote("SELECT '" + "x" * (1 << 20) + "'")
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status = conn.recv(64).split(b" ")[1]
    assert status.startswith(b"4"), status
    assert validate(sql, project, "SELECT 1") == {"queryInfo": {}}
