"""Google's provided templates by their paths (gs://dataflow-templates[-REGION]/VERSION/NAME): the built-ins of
the same names and parameters, launched through google-api-python-client as on Dataflow (docs/templates.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Api, Server, discovery_client, required_path
from googleapiclient.errors import HttpError
from test_emulators import need_emulator, read_env
from test_running_jobs import wait_state
from test_streaming import START_S, wait_for

from beamport import emulators

pytestmark = pytest.mark.slow
PROJECT = "templates-demo"
GOOGLE = "gs://dataflow-templates/latest"


@pytest.fixture(scope="module")
def pubsub_server(tmp_path_factory):
    """A server with Prism as its streaming engine and the Pub/Sub emulator, whose PUBSUB_EMULATOR_HOST this
    process uses (as a client's would)."""
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    need_emulator(emulators.PUBSUB)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    root = tmp_path_factory.mktemp("google-templates")
    srv = Server(
        root / "data",
        extra_args=("--allow-path", str(root), "--workers", "2", "--prism", str(prism), "--emulators", "pubsub"),
    ).start()
    srv.root = root
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", read_env(srv.data_dir)["PUBSUB_EMULATOR_HOST"])
    yield srv
    srv.stop()
    monkeypatch.undo()


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
    return {p.name: p.read_text().splitlines() for p in sorted(directory.glob("out-*.txt"))}


def test_cloud_pubsub_to_gcs_text_writes_a_file_per_window_then_drains(pubsub_server):
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/text-in").name
    subscription = subscriber.create_subscription(name=f"projects/{PROJECT}/subscriptions/text-in", topic=topic).name
    output = pubsub_server.root / "windowed"
    launched = (
        templates(pubsub_server)
        .launch(
            projectId=PROJECT,
            location="us-central1",
            gcsPath=f"{GOOGLE}/Cloud_PubSub_to_GCS_Text",
            body={
                "jobName": "pubsub-to-text",
                "parameters": {
                    "inputSubscription": subscription,
                    "outputDirectory": f"{output}/",
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
    api = Api(pubsub_server.url, PROJECT)
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
    assert not list(output.glob(".temp-*")), "no temporary file is left behind"
    texts = [m["messageText"] for m in api.messages(job["id"]).json().get("jobMessages", [])]
    assert any("Google's provided template" in t for t in texts), texts
