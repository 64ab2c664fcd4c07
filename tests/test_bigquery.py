"""BigQuery on Beamport: `serve --emulators gcs,bigquery` runs bqemulator (docs/emulators.md), Google's BigQuery
client works against it, and an unchanged batch pipeline submitted by Beam's DataflowRunner (gs:// text ->
WriteToBigQuery) writes its rows there from every engine's SDK workers (docs/google-services.md)."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from conftest import Api, Server, required_path
from test_emulators import need_emulator, read_env, storage_client
from test_running_jobs import dataflow_flags, run
from test_streaming import PIPELINES, flink_args, flink_endpoints

from beamport import emulators, endpoints

pytestmark = pytest.mark.slow
VARIABLES = endpoints.VARIABLES
LINES = [f"word{i},{i}" for i in range(20)]


@pytest.fixture(scope="module")
def bq_server(tmp_path_factory):
    """A server with workers, the GCS and BigQuery emulators, Prism and Flink (when there are), the emulators'
    variables in this process's environment (as a client's)."""
    need_emulator(emulators.GCS)
    need_emulator(emulators.BIGQUERY)
    base = tmp_path_factory.mktemp("bigquery")
    saved = {name: os.environ.pop(name) for name in VARIABLES if name in os.environ}
    prism = os.environ.get("BEAMPORT_TEST_PRISM")
    engine_args = ("--prism", prism) if prism else ()
    if os.environ.get("BEAMPORT_TEST_FLINK_ENV"):
        engine_args += flink_args(flink_endpoints())
    srv = Server(
        base / "data",
        extra_args=("--allow-path", str(base), "--workers", "1", *engine_args, "--emulators", "gcs,bigquery"),
    ).start()
    srv.root = base
    os.environ.update(read_env(srv.data_dir))
    yield srv
    srv.stop()
    for name in VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)


def bigquery_client(project: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=project, credentials=AnonymousCredentials())  # reads BIGQUERY_EMULATOR_HOST


def test_googles_client_creates_inserts_and_queries(bq_server, project):
    from google.cloud import bigquery

    assert read_env(bq_server.data_dir)["BIGQUERY_EMULATOR_HOST"].startswith("http://127.0.0.1:")
    client = bigquery_client(project)
    client.create_dataset("shop")
    schema = [bigquery.SchemaField("item", "STRING"), bigquery.SchemaField("price", "INTEGER")]
    table = client.create_table(bigquery.Table(f"{project}.shop.sales", schema=schema))
    assert client.insert_rows_json(table, [{"item": "tea", "price": 3}, {"item": "cake", "price": 5}]) == []
    rows = client.query(f"SELECT item, price FROM `{project}.shop.sales` ORDER BY price").result()
    assert [(r.item, r.price) for r in rows] == [("tea", 3), ("cake", 5)]
    # Its tables are in the data dir's DuckDB file, which a restart of the emulator keeps.
    assert list((bq_server.data_dir / "emulators" / "bigquery").glob("*.duckdb"))


def test_a_streamed_rows_insert_id_seen_lately_is_dropped_as_bigquery_does(bq_server, project):
    """A retried insertAll (Beam's, a restarted Flink task's) adds no row twice: rows whose insertId went in
    lately, or came earlier in the same request, are dropped; rows without one, a failed request's, and a bad row's
    (skipInvalidRows) are not remembered; an error's index is the row's place in the request."""
    from google.cloud import bigquery

    client = bigquery_client(project)
    client.create_dataset("retries")
    schema = [bigquery.SchemaField("item", "STRING"), bigquery.SchemaField("price", "INTEGER")]
    table = client.create_table(bigquery.Table(f"{project}.retries.sales", schema=schema))
    rows = [{"item": "tea", "price": 3}, {"item": "cake", "price": 5}]
    assert client.insert_rows_json(table, rows, row_ids=["id-tea", "id-cake"]) == []
    assert client.insert_rows_json(table, rows, row_ids=["id-tea", "id-cake"]) == []  # the retry
    assert client.insert_rows_json(table, [{"item": "jam", "price": 2}] * 2, row_ids=["id-jam"] * 2) == []
    assert client.insert_rows_json(table, [{"item": "bun", "price": 1}] * 2, row_ids=[None, None]) == []
    # A bad row between a repeated one and a new one: its index is the request's, and its id stays free.
    errors = client.insert_rows_json(
        table,
        [{"item": "tea", "price": 3}, {"item": "pie", "price": "x"}, {"item": "egg", "price": 4}],
        row_ids=["id-tea", "id-pie", "id-egg"],
        skip_invalid_rows=True,
    )
    assert [error["index"] for error in errors] == [1]
    assert client.insert_rows_json(table, [{"item": "pie", "price": 6}], row_ids=["id-pie"]) == []
    found = client.query(f"SELECT item, price FROM `{project}.retries.sales` ORDER BY item").result()
    assert sorted((r.item, r.price) for r in found) == [
        ("bun", 1), ("bun", 1), ("cake", 5), ("egg", 4), ("jam", 2), ("pie", 6), ("tea", 3)
    ]  # fmt: skip


def test_rows_streamed_in_while_others_read_the_table_leave_the_emulator_answering(bq_server, project):
    """A streaming pipeline inserts while its user reads the table: three threads streaming rows in while three list
    them (this load hung the unpatched emulator within seconds). bqemulator shared one DuckDB connection between
    its threads, and this deadlocked it for good (a CI run hung on it): every call answers, and every row is in."""
    import threading

    from google.cloud import bigquery

    client = bigquery_client(project)
    client.create_dataset("busy")
    table = client.create_table(bigquery.Table(f"{project}.busy.t", schema=[bigquery.SchemaField("n", "INTEGER")]))
    failures: list[str] = []

    def insert(worker: int) -> None:
        for batch in range(60):
            rows = [{"n": worker * 10_000 + batch * 20 + i} for i in range(20)]
            if errors := client.insert_rows_json(table, rows, timeout=30):
                failures.append(str(errors))

    def read(_: int) -> None:
        for _ in range(60):
            list(client.list_rows(table, timeout=30))

    threads = [threading.Thread(target=f, args=(k,), daemon=True) for k in range(3) for f in (insert, read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [t for t in threads if t.is_alive()], "the emulator stopped answering"
    assert not failures, failures
    assert len(list(client.list_rows(table, timeout=30))) == 3 * 60 * 20


def test_queries_reach_no_file_outside_the_emulators_data(bq_server, project, tmp_path):
    """DuckDB's file functions, which a query may call, and load jobs' plain paths reach only the emulator's own
    data and the gcs emulator's objects: not the server's keys, not a file to write."""
    from google.api_core.exceptions import BadRequest
    from google.cloud import bigquery

    client = bigquery_client(project)
    key = bq_server.data_dir / "secret-key.json"  # as the server's own keys are kept
    key.write_text('{"private_key": "secret"}\n')
    for query in (f"SELECT content FROM read_text('{key}')", f"COPY (SELECT 1 AS n) TO '{tmp_path}/written.csv'"):
        with pytest.raises(BadRequest, match="disabled by configuration"):
            client.query(query).result()
    assert not (tmp_path / "written.csv").exists()
    client.create_dataset("loads")
    load = bigquery.LoadJobConfig(source_format="CSV", autodetect=True)
    with pytest.raises(Exception, match="disabled by configuration|Permission"):
        client.load_table_from_uri(str(key), f"{project}.loads.key", job_config=load).result()


def bqemulator_processes(server: Server) -> list[psutil.Process]:
    assert server.process is not None
    return [
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)
        if any(part.endswith("/bqemulator") for part in p.cmdline()[:2])
    ]


def test_the_emulator_started_again_keeps_its_tables(bq_server, project):
    client = bigquery_client(project)
    client.create_dataset("kept")
    client.query(f"CREATE TABLE `{project}.kept.t` AS SELECT 'x' AS name, 1 AS n").result()
    (emulator,) = bqemulator_processes(bq_server)
    emulator.kill()
    emulator.wait(30)
    endpoint = read_env(bq_server.data_dir)["BIGQUERY_EMULATOR_HOST"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not emulators.BIGQUERY.healthy(int(endpoint.rsplit(":", 1)[1])):
        time.sleep(0.1)
    (again,) = bqemulator_processes(bq_server)
    assert again.pid != emulator.pid
    assert [tuple(r.values()) for r in client.query(f"SELECT name, n FROM `{project}.kept.t`").result()] == [("x", 1)]


EXPECTED = sorted((line.split(",")[0], int(line.split(",")[1])) for line in LINES)


# Each method on one engine: what differs between engines is where the SDK workers run, the same for both.
@pytest.mark.parametrize(("engine", "method"), [("embedded", "FILE_LOADS"), ("prism", "STREAMING_INSERTS")])
def test_a_batch_pipeline_from_gcs_text_to_bigquery(bq_server, project, tmp_path, engine, method):
    """ReadFromText(gs://...) -> WriteToBigQuery, unchanged, on the engine's SDK workers: insertAll through
    google-cloud-bigquery's Client, or files on GCS and a load job through apitools' BigqueryV2."""
    if engine == "prism":
        required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    bucket = storage_client().create_bucket(f"bq-{project}")
    bucket.blob("in-1.txt").upload_from_string("\n".join(LINES[:10]) + "\n")
    bucket.blob("in-2.txt").upload_from_string("\n".join(LINES[10:]) + "\n")
    client = bigquery_client(project)
    client.create_dataset("words")
    gs = f"gs://{bucket.name}"
    flags = [f for f in dataflow_flags(bq_server, project, tmp_path, "to-bigquery") if "_location=" not in f]
    flags += [f"--temp_location={gs}/temp", f"--staging_location={gs}/staging", f"--labels=beamport_engine={engine}"]
    pipeline = [str(PIPELINES / "text_to_bigquery.py"), f"--input={gs}/in*.txt", f"--method={method}"]
    run([*pipeline, f"--table={project}:words.counts", *flags], timeout=600)

    (job,) = Api(bq_server.url, project).all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    rows = client.query(f"SELECT word, count FROM `{project}.words.counts`").result()
    assert sorted((r.word, r.count) for r in rows) == EXPECTED
    loads = [j for j in client.list_jobs(project=project) if j.job_type == "load"]
    assert bool(loads) == (method == "FILE_LOADS")


@pytest.mark.parametrize("method", ["DIRECT_READ", "EXPORT"])
def test_a_batch_pipeline_reads_a_table(bq_server, project, method):
    """ReadFromBigQuery, unchanged, on the embedded engine's SDK workers. DIRECT_READ: Beam's BigQueryReadClient,
    which takes no endpoint, reads the rows from the emulator's Storage Read API (gRPC), pointed there by
    Beamport's plugin. EXPORT (Beam's default): an extract job writes the table as Avro to the temp location on
    the gcs emulator (`*` as shard 0), whose listing then finds the file the BigQuery emulator wrote there, and
    Beam reads it."""
    from google.cloud import bigquery

    client = bigquery_client(project)
    client.create_dataset("read")
    schema = [bigquery.SchemaField("word", "STRING"), bigquery.SchemaField("count", "INTEGER")]
    table = client.create_table(bigquery.Table(f"{project}.read.counts", schema=schema))
    assert client.insert_rows_json(table, [{"word": w, "count": c} for w, c in EXPECTED]) == []
    workdir = bq_server.root / project  # an allowed path
    workdir.mkdir()
    flags = dataflow_flags(bq_server, project, workdir, "from-bigquery")
    if method == "EXPORT":
        bucket = storage_client().create_bucket(f"export-{project}")
        flags = [f for f in flags if "temp_location=" not in f] + [f"--temp_location=gs://{bucket.name}/temp"]
    pipeline = [str(PIPELINES / "bigquery_to_text.py"), f"--method={method}", f"--output={workdir}/out"]
    run([*pipeline, f"--table={project}:read.counts", *flags], timeout=600)

    (job,) = Api(bq_server.url, project).all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    lines = [line for path in workdir.glob("out*") for line in path.read_text().splitlines()]
    assert sorted((word, int(count)) for word, count in (line.split(",") for line in lines)) == EXPECTED
    extracts = [j for j in client.list_jobs(project=project) if j.job_type == "extract"]
    assert bool(extracts) == (method == "EXPORT")


@pytest.mark.xdist_group("flink")  # one Flink job at a time, as test_streaming
def test_a_batch_pipeline_to_bigquery_on_flinks_sdk_workers(bq_server, project):
    """Flink's SDK worker pool does not inherit the server's environment: its workers reach the emulator by the
    endpoint the job carries (engine/sdk_boot.py). (Text from a local file: the pool has no GCS endpoint.)"""
    flink_endpoints()
    workdir = bq_server.root / project  # an allowed path
    workdir.mkdir()
    (workdir / "in.txt").write_text("\n".join(LINES) + "\n")
    client = bigquery_client(project)
    client.create_dataset("words")
    flags = [*dataflow_flags(bq_server, project, workdir, "to-bigquery"), "--labels=beamport_engine=flink"]
    pipeline = [str(PIPELINES / "text_to_bigquery.py"), f"--input={workdir}/in.txt", "--method=STREAMING_INSERTS"]
    run([*pipeline, f"--table={project}:words.counts", *flags], timeout=600)

    (job,) = Api(bq_server.url, project).all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    rows = client.query(f"SELECT word, count FROM `{project}.words.counts`").result()
    assert sorted((r.word, r.count) for r in rows) == EXPECTED
