"""Google's provided templates by their paths (gs://dataflow-templates[-REGION]/VERSION/NAME): the built-ins of
the same names and parameters, launched through google-api-python-client as on Dataflow (docs/templates.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Api, Server, discovery_client, required_path
from googleapiclient.errors import HttpError
from test_emulators import need_emulator, read_env
from test_running_jobs import wait_state
from test_streaming import START_S, cancel_flink_jobs_of_server, flink_args, flink_endpoints, wait_for

from beamport import emulators, endpoints

pytestmark = pytest.mark.slow
PROJECT = "templates-demo"
GOOGLE = "gs://dataflow-templates/latest"


def streaming_server_with_pubsub(root: Path, engine: str):
    """A server with `engine` (prism or flink) as its streaming engine and the Pub/Sub emulator, whose
    PUBSUB_EMULATOR_HOST this process uses (as a client's would)."""
    if engine == "prism":
        engine_args: tuple[str, ...] = ("--prism", str(required_path("BEAMPORT_TEST_PRISM", "builds Prism")))
    else:
        engine_args = flink_args(flink_endpoints())
    need_emulator(emulators.PUBSUB)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    srv = Server(
        root / "data",
        extra_args=("--allow-path", str(root), "--workers", "2", *engine_args, "--emulators", "pubsub"),
    ).start()
    srv.root = root
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", read_env(srv.data_dir)["PUBSUB_EMULATOR_HOST"])
    yield srv
    srv.stop()
    monkeypatch.undo()


@pytest.fixture(scope="module")
def pubsub_server(tmp_path_factory):
    yield from streaming_server_with_pubsub(tmp_path_factory.mktemp("google-templates"), "prism")


@pytest.fixture
def flink_pubsub_server(tmp_path):
    for srv in streaming_server_with_pubsub(tmp_path, "flink"):
        yield srv
    cancel_flink_jobs_of_server(flink_endpoints(), srv)  # one a failed test left running


def templates(server: Server):
    return discovery_client(server.url).projects().locations().templates()


def test_google_paths_name_the_built_ins_and_refuse_what_is_not_there(pubsub_server):
    client = templates(pubsub_server)
    for path in (
        f"{GOOGLE}/Cloud_PubSub_to_GCS_Text",
        "gs://dataflow-templates-europe-west1/latest/Cloud_PubSub_to_GCS_Text",
        "gs://dataflow-templates/2024-01-01-00_RC00/Cloud_PubSub_to_GCS_Text",
    ):
        described = client.get(projectId=PROJECT, location="us-central1", gcsPath=path).execute()
        metadata = described["metadata"]
        assert described["templateType"] == "LEGACY" and metadata["name"] == "Cloud_PubSub_to_GCS_Text"
        assert metadata["streaming"] is True
        names = {p["name"] for p in metadata["parameters"]}
        assert {"inputTopic", "inputSubscription", "outputDirectory", "outputFilenamePrefix"} <= names
    for name, parameters in (
        ("PubSub_to_BigQuery", {"inputTopic", "outputTableSpec", "outputDeadletterTable"}),
        ("PubSub_Subscription_to_BigQuery", {"inputSubscription", "outputTableSpec", "outputDeadletterTable"}),
        ("GCS_Text_to_BigQuery", {"inputFilePattern", "JSONPath", "outputTable", "bigQueryLoadingTemporaryDirectory"}),
        ("Word_Count", {"inputFile", "output"}),
    ):
        metadata = client.get(projectId=PROJECT, location="us-central1", gcsPath=f"{GOOGLE}/{name}").execute()
        assert parameters <= {p["name"] for p in metadata["metadata"]["parameters"]}, name

    refused = {
        f"{GOOGLE}/Cloud_Spanner_to_GCS_Avro": (501, "is not provided by Beamport"),
        f"{GOOGLE}/flex/PubSub_to_BigQuery_Flex": (501, "Beamport runs no Google images"),
        "gs://dataflow-templates/yesterday/Word_Count": (404, "is not one of Google's provided templates"),
    }
    for path, (status, words) in refused.items():
        with pytest.raises(HttpError) as caught:
            client.get(projectId=PROJECT, location="us-central1", gcsPath=path).execute()
        assert caught.value.resp.status == status and words in str(caught.value), path
        with pytest.raises(HttpError) as caught:
            client.launch(projectId=PROJECT, location="us-central1", gcsPath=path, body={"jobName": "nope"}).execute()
        assert caught.value.resp.status == status, path
    # Google's flex templates are images: refused, naming the classic template of the same job.
    flex = discovery_client(pubsub_server.url).projects().locations().flexTemplates()
    with pytest.raises(HttpError) as caught:
        flex.launch(
            projectId=PROJECT,
            location="us-central1",
            body={
                "launchParameter": {
                    "jobName": "flex",
                    "containerSpecGcsPath": f"{GOOGLE}/flex/PubSub_to_BigQuery_Flex",
                }
            },
        ).execute()
    assert caught.value.resp.status == 501 and "Launch the classic PubSub_to_BigQuery" in str(caught.value)
    # Google's parameter checks: a topic that is not one is refused before anything is created.
    with pytest.raises(HttpError) as caught:
        client.launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/Cloud_PubSub_to_GCS_Text",
            body={"jobName": "bad", "parameters": {"inputTopic": "my-topic", "outputDirectory": "/tmp/x"}},
        ).execute()
    assert caught.value.resp.status == 400 and "inputTopic" in str(caught.value)


def windowed_files(directory: Path) -> dict[str, list[str]]:
    """The files written (in the windows' years' directories), by name."""
    return {p.name: p.read_text().splitlines() for p in sorted(directory.glob("*/out-*.txt"))}


def test_cloud_pubsub_to_gcs_text_writes_a_file_per_window_then_drains(pubsub_server):
    check_windowed_files_then_drain(pubsub_server)


@pytest.mark.xdist_group("flink")
def test_cloud_pubsub_to_gcs_text_on_flink(flink_pubsub_server):
    """Its window size is a runtime parameter: staging makes its windows Beam's FixedWindows of the launch's size,
    which Beam's Flink runner runs (it runs no Python WindowFn)."""
    check_windowed_files_then_drain(flink_pubsub_server)


def check_windowed_files_then_drain(server: Server) -> None:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/text-in").name
    subscription = subscriber.create_subscription(name=f"projects/{PROJECT}/subscriptions/text-in", topic=topic).name
    output = server.root / "windowed"
    launched = (
        templates(server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/Cloud_PubSub_to_GCS_Text",
            body={
                "jobName": "pubsub-to-text",
                "parameters": {
                    "inputSubscription": subscription,
                    "outputDirectory": f"{output}/YYYY/",  # the window's year
                    "outputFilenamePrefix": "out-",
                    "outputFilenameSuffix": ".txt",
                    "windowDuration": "5s",
                },
            },
        )
        .execute()
    )
    job = launched["job"]
    assert job["type"] == "JOB_TYPE_STREAMING"
    api = Api(server.url, PROJECT)
    for line in ("one", "two", "three"):
        publisher.publish(topic, line.encode()).result(timeout=30)
    # Their window closes once the watermark (the wall clock, once nothing older is pending) passes its end.
    wait_for("the first window's file", lambda: windowed_files(output), START_S)
    files = windowed_files(output)
    assert sorted(line for lines in files.values() for line in lines) == ["one", "three", "two"]
    for name in files:  # W-P-SS-of-NN: the window (Joda's instants), the pane, one shard
        assert name.startswith("out-") and name.endswith("-pane-0-last-00-of-01.txt"), name
        start, end = name.removeprefix("out-").split("-pane-")[0].split("Z-")
        assert start.endswith(".000") and end.endswith(".000Z"), name

    publisher.publish(topic, b"last").result(timeout=30)
    wait_for("the next window's file", lambda: len(windowed_files(output)) > len(files), START_S)
    assert api.update(job["id"], {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
    wait_state(api, job["id"], {"JOB_STATE_DRAINED"}, timeout=START_S)
    lines = sorted(line for lines in windowed_files(output).values() for line in lines)
    assert lines == ["last", "one", "three", "two"]
    assert not list(output.glob("*/.temp-*")), "no temporary file is left behind"
    assert [p.name for p in output.iterdir()] == [str(time.gmtime().tm_year)]
    texts = [m["messageText"] for m in api.messages(job["id"]).json().get("jobMessages", [])]
    assert any("Google's provided template" in t for t in texts), texts


@pytest.fixture(scope="module")
def bigquery_server(tmp_path_factory):
    """A server with Prism, and the Pub/Sub, BigQuery and GCS emulators, whose variables this process uses."""
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    yield from server_with_google_services(tmp_path_factory.mktemp("google-bq-templates"), ("--prism", str(prism)))


@pytest.fixture
def flink_bigquery_server(tmp_path):
    """The same with Flink as the streaming engine."""
    for srv in server_with_google_services(tmp_path, flink_args(flink_endpoints())):
        yield srv
    cancel_flink_jobs_of_server(flink_endpoints(), srv)  # one a failed test left running


def server_with_google_services(root: Path, engine_args: tuple[str, ...]):
    need_emulator(emulators.PUBSUB)
    need_emulator(emulators.BIGQUERY)
    need_emulator(emulators.GCS)
    monkeypatch = pytest.MonkeyPatch()
    for variable in endpoints.VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    srv = Server(
        root / "data",
        extra_args=(
            *("--allow-path", str(root), "--workers", "2", *engine_args),
            *("--emulators", "pubsub,bigquery,gcs"),
        ),
    ).start()
    srv.root = root
    for variable, value in read_env(srv.data_dir).items():
        monkeypatch.setenv(variable, value)
    yield srv
    srv.stop()
    monkeypatch.undo()


def bigquery_client():
    import os

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["BIGQUERY_EMULATOR_HOST"]},
    )


def table_rows(client, table: str) -> list[dict]:
    from google.api_core.exceptions import NotFound

    try:
        return [dict(row) for row in client.list_rows(table)]
    except (NotFound, IndexError):  # IndexError: a row the emulator listed while inserting it (short): ask again
        return []


def test_pubsub_subscription_to_bigquery_writes_json_messages_as_rows_and_failures_to_the_dead_letter_table(
    bigquery_server,
):
    from google.cloud import bigquery, pubsub_v1

    bq = bigquery_client()
    bq.create_dataset(f"{PROJECT}.events")
    schema = [bigquery.SchemaField("name", "STRING"), bigquery.SchemaField("n", "INTEGER")]
    bq.create_table(bigquery.Table(f"{PROJECT}.events.counts", schema=schema))
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/events").name
    subscription = subscriber.create_subscription(name=f"projects/{PROJECT}/subscriptions/events", topic=topic).name
    udf = bigquery_server.root / "udf.js"
    udf.write_text(
        "function transform(text) {\n"
        "  var row = JSON.parse(text);\n"
        "  if (row.skip) return null;\n"
        "  row.name = row.name.toUpperCase();\n"
        "  return JSON.stringify(row);\n"
        "}\n"
    )
    job = (
        templates(bigquery_server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/PubSub_Subscription_to_BigQuery",
            body={
                "jobName": "pubsub-to-bigquery",
                "parameters": {
                    "inputSubscription": subscription,
                    "outputTableSpec": f"{PROJECT}:events.counts",
                    "javascriptTextTransformGcsPath": str(udf),
                    "javascriptTextTransformFunctionName": "transform",
                },
            },
        )
        .execute()["job"]
    )
    assert job["type"] == "JOB_TYPE_STREAMING"
    for data in (
        b'{"name": "a", "n": 1}',
        b'{"name": "b", "n": 2}',
        b'{"skip": true}',
        b"not json",
        b'{"name": "c", "n": "many"}',
    ):
        publisher.publish(topic, data, origin="test").result(timeout=30)
    wait_for("the rows", lambda: len(table_rows(bq, f"{PROJECT}.events.counts")) >= 2, START_S)
    dead = f"{PROJECT}.events.counts_error_records"
    wait_for("the dead letters", lambda: len(table_rows(bq, dead)) >= 2, START_S)
    rows = sorted((row["name"], row["n"]) for row in table_rows(bq, f"{PROJECT}.events.counts"))
    assert rows == [("A", 1), ("B", 2)]
    # Not JSON: the message itself; a row BigQuery refused (n is no INTEGER): the row, with BigQuery's errors.
    failures = {row["payloadString"]: row for row in table_rows(bq, dead)}
    assert set(failures) == {'{"n": "many", "name": "C"}', "not json"}, failures
    assert failures["not json"]["attributes"] == [{"key": "origin", "value": "test"}]
    assert all(row["errorMessage"] for row in failures.values())

    api = Api(bigquery_server.url, PROJECT)
    assert api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job["id"], {"JOB_STATE_CANCELLED"}, timeout=START_S)


def test_pubsub_to_bigquery_reads_a_topic_through_a_subscription_of_its_own(bigquery_server):
    check_topic_to_bigquery(bigquery_server)


@pytest.mark.xdist_group("flink")
def test_pubsub_to_bigquery_on_flink(flink_bigquery_server):
    """Its parameters are camelCase options (inputTopic, outputTableSpec), which reach Flink's SDK workers under
    their own names."""
    check_topic_to_bigquery(flink_bigquery_server)


def check_topic_to_bigquery(bigquery_server: Server) -> None:
    from google.cloud import bigquery, pubsub_v1

    bq = bigquery_client()
    bq.create_dataset(f"{PROJECT}.topic")
    schema = [bigquery.SchemaField("name", "STRING"), bigquery.SchemaField("n", "INTEGER")]
    bq.create_table(bigquery.Table(f"{PROJECT}.topic.counts", schema=schema))
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/topic-events").name
    job = (
        templates(bigquery_server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/PubSub_to_BigQuery",
            body={
                "jobName": "topic-to-bigquery",
                "parameters": {
                    "inputTopic": topic,
                    "outputTableSpec": "topic.counts",  # in the job's project
                    "outputDeadletterTable": f"{PROJECT}:topic.failures",
                },
            },
        )
        .execute()["job"]
    )
    wait_for("the reader's own subscription", lambda: list(publisher.list_topic_subscriptions(topic=topic)), START_S)
    for data in (b'{"name": "a", "n": 1}', b"[1, 2]"):
        publisher.publish(topic, data).result(timeout=30)
    wait_for("the row", lambda: table_rows(bq, f"{PROJECT}.topic.counts"), START_S)
    wait_for("the dead letter", lambda: table_rows(bq, f"{PROJECT}.topic.failures"), START_S)
    assert [(row["name"], row["n"]) for row in table_rows(bq, f"{PROJECT}.topic.counts")] == [("a", 1)]
    [failure] = table_rows(bq, f"{PROJECT}.topic.failures")
    assert failure["payloadString"] == "[1, 2]" and "JSON object" in failure["errorMessage"]
    api = Api(bigquery_server.url, PROJECT)
    assert api.update(job["id"], {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
    wait_state(api, job["id"], {"JOB_STATE_DRAINED"}, timeout=START_S)


def test_gcs_text_to_bigquery_makes_the_table_from_the_schema_file_and_appends_the_udfs_rows(bigquery_server):
    data = bigquery_server.root / "text"
    data.mkdir()
    (data / "a.csv").write_text("Paris,ann,31\nOslo,bob,42\n")
    (data / "b.csv").write_text("Rome,cy,7\n#skipped\n")
    (data / "schema.json").write_text(
        '{"BigQuery Schema": [{"name": "location", "type": "STRING"}, {"name": "name", "type": "STRING"},'
        ' {"name": "age", "type": "INTEGER", "mode": "REQUIRED"}]}'
    )
    (data / "udf.js").write_text(
        "function transform(line) {\n"
        "  if (line.charAt(0) === '#') return null;\n"
        "  var values = line.split(',');\n"
        "  return JSON.stringify({location: values[0], name: values[1], age: parseInt(values[2])});\n"
        "}\n"
    )
    job = (
        templates(bigquery_server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/GCS_Text_to_BigQuery",
            body={
                "jobName": "text-to-bigquery",
                "parameters": {
                    "inputFilePattern": str(data / "*.csv"),
                    "JSONPath": str(data / "schema.json"),
                    "outputTable": f"{PROJECT}:people.everyone",
                    "bigQueryLoadingTemporaryDirectory": str(data / "tmp"),
                    "javascriptTextTransformGcsPath": str(data / "udf.js"),
                    "javascriptTextTransformFunctionName": "transform",
                },
            },
        )
        .execute()["job"]
    )
    assert job["type"] == "JOB_TYPE_BATCH"
    bq = bigquery_client()
    bq.create_dataset(f"{PROJECT}.people")  # the dataset must exist (as on BigQuery); the table is made
    wait_state(Api(bigquery_server.url, PROJECT), job["id"], {"JOB_STATE_DONE"}, timeout=START_S)
    table = bq.get_table(f"{PROJECT}.people.everyone")
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("location", "STRING", "NULLABLE"),
        ("name", "STRING", "NULLABLE"),
        ("age", "INTEGER", "REQUIRED"),
    ]
    rows = sorted((row["location"], row["name"], row["age"]) for row in table_rows(bq, f"{PROJECT}.people.everyone"))
    assert rows == [("Oslo", "bob", 42), ("Paris", "ann", 31), ("Rome", "cy", 7)]


def test_cloud_pubsub_to_gcs_text_writes_to_cloud_storage_with_dated_directories(bigquery_server):
    """A topic read, and the windowed files in gs:// (the GCS emulator) under the window's date."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1, storage

    bucket = storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket("windowed-text")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/text-to-gcs").name
    job = (
        templates(bigquery_server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath="gs://dataflow-templates-us-central1/latest/Cloud_PubSub_to_GCS_Text",
            body={
                "jobName": "pubsub-to-gcs",
                "parameters": {
                    "inputTopic": topic,
                    "outputDirectory": "gs://windowed-text/out/{YYYY}/MM/",
                    "yearPattern": "{YYYY}",
                    "windowDuration": "5s",
                    "numShards": "2",
                },
            },
        )
        .execute()["job"]
    )
    wait_for("the reader's own subscription", lambda: list(publisher.list_topic_subscriptions(topic=topic)), START_S)
    publisher.publish(topic, b"hello").result(timeout=30)
    publisher.publish(topic, b"world").result(timeout=30)

    def written() -> dict[str, list[str]]:
        """The files written (not the temporary ones a rename, a copy and a delete on GCS, has yet to remove)."""
        blobs = [b for b in bucket.list_blobs(prefix="out/") if "/.temp-beamport-" not in b.name]
        return {b.name: b.download_as_text().splitlines() for b in blobs}

    wait_for("the windowed files", lambda: sum(len(lines) for lines in written().values()) >= 2, START_S)
    temporary = lambda: [b.name for b in bucket.list_blobs(prefix="out/") if "/.temp-beamport-" in b.name]  # noqa: E731
    wait_for("the temporary files gone", lambda: not temporary(), START_S)
    files = written()
    assert sorted(line for lines in files.values() for line in lines) == ["hello", "world"]
    for name in files:  # the default prefix, "output", in the window's year and month; two shards
        year, month, file_name = name.removeprefix("out/").split("/")
        assert len(year) == 4 and len(month) == 2 and file_name.startswith("output" + year), name
        assert file_name.endswith(("-pane-0-last-00-of-02", "-pane-0-last-01-of-02")), name
    api = Api(bigquery_server.url, PROJECT)
    assert api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job["id"], {"JOB_STATE_CANCELLED"}, timeout=START_S)
