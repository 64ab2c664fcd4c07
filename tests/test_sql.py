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
    client = build_from_document(
        json.loads(DOCUMENT.read_text()),
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": server.url},
    )
    return client.projects().locations().sql()


def validate(sql, project, query):
    return sql.validate(projectId=project, location="us-central1", query=query).execute()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT a, COUNT(*) AS n FROM t GROUP BY a",
        "SELECT t.a, u.b FROM t JOIN u ON t.id = u.id WHERE t.a > 1",
        "SELECT a, SUM(b) OVER (PARTITION BY a ORDER BY c ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
        "SELECT STRUCT(1 AS a, 'x' AS b), ARRAY<INT64>[1, 2]",
    ],
)
def test_valid_queries_answer_query_info_and_no_error(sql, project, query):
    assert validate(sql, project, query) == {"queryInfo": {}}


@pytest.mark.parametrize(
    "query, message",
    [
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
    ],
)
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


# -- the catalog and SQL jobs --------------------------------------------------------------------

from conftest import Api, Server, beamport_command  # noqa: E402
from test_running_jobs import read_output, texts, wait_state  # noqa: E402

QUERIES = {
    "by_region": "SELECT region, SUM(amount) AS total, COUNT(*) AS n FROM sales GROUP BY region",
    "joined": "SELECT c.name, SUM(s.amount) AS total FROM sales AS s JOIN customers AS c ON s.region = c.region "
    "GROUP BY c.name",
    "running": "SELECT user_id, ts, value, SUM(value) OVER (PARTITION BY user_id ORDER BY ts) AS running_total "
    "FROM events",
}


@pytest.fixture(scope="module")
def sql_server(tmp_path_factory):
    """A server that runs jobs, and CSV, JSON Lines and Parquet files to query."""
    base = tmp_path_factory.mktemp("sql")
    srv = Server(base / "data", extra_args=("--allow-path", str(base))).start()
    files = base / "files"
    files.mkdir()
    (files / "sales-1.csv").write_text("region,product,amount\nnorth,apple,3\nsouth,pear,5\n")
    (files / "sales-2.csv").write_text("region,product,amount\nnorth,pear,4\neast,apple,1\n")
    rows = [
        {"id": 1, "name": "ann", "region": "north"},
        {"id": 2, "name": "bob", "region": "south"},
        {"id": 3, "name": "cy", "region": "north"},
    ]
    (files / "customers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"user_id": [1, 1, 2, 1, 2], "ts": [1, 2, 1, 3, 2], "value": [10.0, 5.5, 1.0, 2.0, 4.0]}),
        files / "events.parquet",
    )
    yield srv, base
    srv.stop()


def test_sql_queries_run_as_jobs_and_match_the_engine_run_directly(sql_server, project):
    srv, base = sql_server
    api = Api(srv.url, project)
    common = ["--endpoint", srv.url, "--project", project]
    files = base / "files"
    beamport_command(
        "sql", "tables", "add", "sales", "--path", str(files / "sales-*.csv"), "--table-format", "csv", *common
    )
    beamport_command(
        "sql",
        "tables",
        "add",
        "customers",
        "--path",
        str(files / "customers.jsonl"),
        "--table-format",
        "jsonl",
        *common,
    )
    beamport_command(
        "sql", "tables", "add", "events", "--path", str(files / "events.parquet"), "--table-format", "parquet", *common
    )
    listed = beamport_command("sql", "tables", "list", *common, "--format", "json")
    schemas = {t["name"]: t["schema"] for t in json.loads(listed.stdout)["tables"]}
    assert schemas["sales"] == [
        {"name": "region", "type": "STRING"},
        {"name": "product", "type": "STRING"},
        {"name": "amount", "type": "INT64"},
    ]
    assert {c["name"] for c in schemas["events"]} == {"user_id", "ts", "value"}

    # Validation now checks names against the catalog.
    assert beamport_command("sql", "validate", "SELECT region FROM sales", *common).returncode == 0
    wrong = beamport_command("sql", "validate", "SELECT colour FROM sales", *common, check=False)
    assert wrong.returncode == 1 and "colour" in wrong.stdout
    misfit = beamport_command(
        "sql", "validate", "SELECT SUM(region) FROM sales", *common, "--format", "json", check=False
    )
    assert misfit.returncode == 1 and "sum(VARCHAR)" in json.loads(misfit.stdout)["errorMessage"]

    ids = {}
    for name, query in QUERIES.items():
        done = beamport_command(
            "sql",
            "query",
            query,
            "--job-name",
            name.replace("_", "-"),
            "--output",
            str(base / "out" / name),
            *common,
            "--format",
            "json",
        )
        ids[name] = json.loads(done.stdout)["id"]
    csv_job = beamport_command(
        "sql",
        "query",
        QUERIES["by_region"],
        "--job-name",
        "as-csv",
        "--output",
        str(base / "out" / "csv"),
        "--output-format",
        "csv",
        *common,
        "--format",
        "json",
    )
    ids["csv"] = json.loads(csv_job.stdout)["id"]
    for name, job_id in ids.items():
        final = wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=180)
        assert final["currentState"] == "JOB_STATE_DONE", (name, texts(api, job_id))

    from beamport.builtin_templates import sql_engine

    tables = {
        "sales": {"path": str(files / "sales-*.csv"), "format": "csv"},
        "customers": {"path": str(files / "customers.jsonl"), "format": "jsonl"},
        "events": {"path": str(files / "events.parquet"), "format": "parquet"},
    }
    for name, query in QUERIES.items():
        direct = sorted(json.dumps(row, sort_keys=True, default=str) for row in sql_engine.run(query, tables))
        assert read_output(base / "out" / name) == direct != [], name
    assert read_output(base / "out" / "by_region") == sorted(
        [
            '{"n": 1, "region": "east", "total": 1}',
            '{"n": 1, "region": "south", "total": 5}',
            '{"n": 2, "region": "north", "total": 7}',
        ]
    )
    assert read_output(base / "out" / "csv") == ["east,1,1", "north,7,2", "south,5,1"]


def test_bad_sql_jobs_are_refused_and_create_nothing(sql_server, project):
    srv, base = sql_server
    api = Api(srv.url, project)
    path = f"/beamport/v1/projects/{project}/locations/us-central1/sql:query"
    api.client.post(
        f"/beamport/v1/projects/{project}/sqlTables",
        json={"name": "sales", "path": str(base / "files" / "sales-*.csv"), "format": "csv"},
    )
    good = {"jobName": "x", "output": str(base / "bad" / "out")}

    def refused(body, status="INVALID_ARGUMENT", code=400):
        response = api.client.post(path, json=body)
        assert response.status_code == code, response.text
        assert response.json()["error"]["status"] == status
        return response.json()["error"]["message"]

    assert "query is required" in refused({**good, "query": ""})
    assert "over 1048576 bytes" in refused({**good, "query": "SELECT '" + "x" * (1 << 20) + "' FROM sales"})
    assert "Unknown table 'orders'" in refused({**good, "query": "SELECT * FROM orders"})
    assert "Only a query" in refused({**good, "query": "DELETE FROM sales WHERE amount > 1"})
    assert "Only a query" in refused({**good, "query": "CREATE TABLE t (a INT64)"})
    assert "Syntax error" in refused({**good, "query": "SELECT FROM sales"})
    assert "colour" in refused({**good, "query": "SELECT colour FROM sales"})
    assert (
        "PERMISSION_DENIED"
        == api.client.post(
            f"/beamport/v1/projects/{project}/sqlTables",
            json={"name": "secrets", "path": "/etc/passwd", "format": "csv"},
        ).json()["error"]["status"]
    )
    launched = api.client.post(
        f"/v1b3/projects/{project}/locations/us-central1/templates:launch",
        params={"gcsPath": "builtin://SQL_Query"},
        json={"jobName": "sneaky"},
    )
    assert launched.status_code == 400 and "sql:query" in launched.json()["error"]["message"]
    assert api.all_jobs() == []
