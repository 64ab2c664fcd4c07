"""Beam Java jobs on a Beamport with Google's service emulators (`serve --emulators gcs,pubsub,bigquery`) reach them
unchanged: a Java pipeline that names no endpoint, submitted by Beam Java's DataflowRunner with the flags of the
other Java tests, reads gs:// text and writes its word counts to a BigQuery table (streaming inserts), a Pub/Sub
topic and gs:// text, all in the emulators; staging gave its harness the options Beam Java's IOs read
(engine/staging.py, docs/google-services.md). A streaming Java pipeline reads and writes Pub/Sub on Prism (and on
Flink: tests/test_java_flink.py). Read back with Google's Python clients."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter

import psutil
import pytest
from conftest import Api, Server, required_path
from test_bigquery import bigquery_client
from test_emulators import need_emulator, read_env, storage_client
from test_java import PROJECT, TEXT, V1, V2, Java, harness_jvms, messages
from test_running_jobs import wait_state
from test_streaming import START_S, flink_args, flink_endpoints, flink_state, wait_for
from test_streaming_observed import read_stage_lag, source_backlog

from beamport import emulators, endpoints

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("java")]
EXPECTED = sorted(f"{word}: {count}" for word, count in Counter(TEXT.split()).items())


@pytest.fixture(scope="module")
def java_with_emulators(tmp_path_factory):
    """A server with the three emulators, its variables in this process's environment (as a client's), and the
    Java pipelines to submit to it."""
    class_path = required_path("BEAMPORT_TEST_JAVA", "builds the Java pipelines (scripts/java-pipelines)")
    for emulator in (emulators.GCS, emulators.PUBSUB, emulators.BIGQUERY):
        need_emulator(emulator)
    base = tmp_path_factory.mktemp("java-emulators")
    saved = {name: os.environ.pop(name) for name in endpoints.VARIABLES if name in os.environ}
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")  # a streaming engine that runs Java
    srv = Server(
        base / "data",
        extra_args=(
            *("--allow-path", str(base), "--workers", "1", "--emulators", "gcs,pubsub,bigquery"),
            *("--prism", str(prism), *flink_args(flink_endpoints())),  # and Flink, the streaming engine
        ),
    ).start()
    os.environ.update(read_env(srv.data_dir))
    yield Java(class_path.read_text().strip(), srv, base)
    srv.stop()
    for name in endpoints.VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)


@pytest.mark.parametrize("path", [V1, V2])
def test_a_java_pipeline_reaches_gcs_bigquery_and_pubsub_unchanged(java_with_emulators, path):
    from google.cloud import pubsub_v1

    java = java_with_emulators
    bucket = storage_client().create_bucket(f"java-{path}")
    bucket.blob("in/text.txt").upload_from_string(TEXT)
    dataset = f"words_{path}"
    bigquery_client(PROJECT).create_dataset(dataset)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{PROJECT}/topics/counts-{path}").name
    subscription = subscriber.create_subscription(
        name=f"projects/{PROJECT}/subscriptions/counts-{path}", topic=topic
    ).name

    # Beam Java's runner v1 estimates a source's size where the job is submitted (its ReadTranslator), so the
    # submitter must reach GCS itself, as it would have to on Dataflow: given, the job's own endpoint is kept. Runner
    # v2 reads nothing at submission: its job names no endpoint at all.
    submitter = [f"--gcsEndpoint={os.environ['STORAGE_EMULATOR_HOST']}/storage/v1/"] if path == V1 else []
    done, job_id = java.dataflow(
        "GoogleServicesWordCount",
        f"gs://{bucket.name}/out/counts",
        path,
        f"--inputFile=gs://{bucket.name}/in/*.txt",
        f"--table={PROJECT}:{dataset}.counts",
        f"--topic={topic}",
        *submitter,
        given_input=False,
    )
    api = Api(java.server.url, PROJECT)
    assert "FINAL_STATE DONE" in done.stdout, "\n".join(messages(api, job_id))[-10000:]

    written = [blob.download_as_text() for blob in bucket.list_blobs(prefix="out/counts")]
    assert sorted(line for text in written for line in text.splitlines()) == EXPECTED
    rows = bigquery_client(PROJECT).query(f"SELECT word, count FROM `{PROJECT}.{dataset}.counts`").result()
    assert sorted(f"{row.word}: {row.count}" for row in rows) == EXPECTED
    published = []
    while len(published) < len(EXPECTED):
        pulled = subscriber.pull(subscription=subscription, max_messages=100, timeout=30).received_messages
        assert pulled, published
        published += [m.message.data.decode() for m in pulled]
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in pulled])
    assert sorted(published) == EXPECTED
    # The job named no other endpoint: staging gave them to its harness.
    options = api.get(job_id, view="JOB_VIEW_ALL").json()["environment"]["sdkPipelineOptions"]["options"]
    assert not {"bigQueryEndpoint", "pubsubRootUrl"} & set(options)
    assert ("gcsEndpoint" in options) == (path == V1)


def test_a_streaming_java_pipeline_reads_and_writes_pubsub_on_prism(java_with_emulators):
    """Runner v1's submission here, v2's on Flink (test_java_flink.py): PubsubIO stages the same native transforms."""
    pubsub_echo(java_with_emulators, V1, "prism")


def pubsub_echo(java: Java, path: str, engine: str) -> None:
    """PubsubEcho (PubsubIO.readStrings from a subscription, a counting DoFn, PubsubIO.writeStrings), submitted with
    --streaming: Beam Java's runner stages its Pub/Sub read and write as Dataflow's native transforms, which staging
    replaces with Beamport's Python ones (the topic and subscription named in PubsubIO's older form) beside the Java
    harness, on the engine named. Every message comes out once, upper-cased; the Java counter is in getMetrics; a
    drain (the source is Beamport's) ends the job DRAINED, with no Java harness left.
    (tests/test_java_flink.py runs it on Flink.)"""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    names = {kind: f"projects/{PROJECT}/{kind}/echo-{path}-{engine}" for kind in ("topics", "subscriptions")}
    source = publisher.create_topic(name=names["topics"] + "-in").name
    subscriber.create_subscription(name=names["subscriptions"] + "-in", topic=source)
    sink = publisher.create_topic(name=names["topics"] + "-out").name
    output = subscriber.create_subscription(name=names["subscriptions"] + "-out", topic=sink).name
    for word in ("hello", "pubsub", "world"):
        publisher.publish(source, word.encode()).result(timeout=30)

    done, job_id = java.dataflow(
        "PubsubEcho",
        sink,
        path,
        f"--inputSubscription={names['subscriptions']}-in",
        f'--labels={{"beamport_engine": "{engine}"}}',
        given_input=False,
    )
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)
    received: list[str] = []

    def echoed() -> bool:
        pulled = subscriber.pull(subscription=output, max_messages=10, timeout=30).received_messages
        if pulled:
            received.extend(m.message.data.decode() for m in pulled)
            subscriber.acknowledge(subscription=output, ack_ids=[m.ack_id for m in pulled])
        return len(received) >= 3

    wait_for("the echoes", echoed, START_S, (api, job_id))
    assert sorted(received) == ["HELLO", "PUBSUB", "WORLD"]
    assert api.get(job_id).json()["type"] == "JOB_TYPE_STREAMING"
    # The read's backlog (the emulator's count of its subscription), none left, a figure of PubsubIO's own step.
    backlog = wait_for("no backlog", lambda: (b := source_backlog(api, job_id)) and set(b.values()) == {0} and b, 60)
    assert {step for step, _ in backlog} == {"Read/PubsubUnboundedSource/Read(PubsubSource)"}, backlog
    # ... and its stage's system lag (its subscription's oldest unacknowledged message's age): none waits now.
    wait_for("the read's stage's lag at 0", lambda: read_stage_lag(api, job_id) == 0, 60, (api, job_id))
    if engine == "flink":
        assert flink_state(flink_endpoints(), job_id) == "RUNNING"

    def counted() -> float:
        metrics = api.client.get(f"{api.jobs_path}/{job_id}/metrics").json().get("metrics", [])
        return max((m.get("scalar", 0) for m in metrics if m["name"]["name"] == "echoed"), default=0)

    wait_for("the counter in getMetrics", lambda: counted() == 3, 90, (api, job_id))  # Flink's lags up to 20 s
    if engine == "flink":
        from test_java_flink import pool_jvms  # (that module imports this one)

        jvms = pool_jvms(flink_endpoints())
    else:
        jvms = harness_jvms(java.server)
    assert jvms, "the job's Java SDK harness runs"
    drained = api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"})
    assert drained.status_code == 200, drained.text
    wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=240)
    assert counted() == 3
    gone, alive = psutil.wait_procs(jvms, timeout=60)
    assert not alive, alive


def test_a_java_pipeline_reads_pubsub_messages_with_their_attributes_and_ids_on_prism(java_with_emulators):
    """PubsubAttributes (PubsubIO.readMessagesWithAttributesAndMessageId, writeMessages): each message reaches the
    Java code with its data, attributes and id, as on Dataflow, and is published again with its attributes and one
    more. (Runner v1's submission passed too; its Pub/Sub transforms are staged the same way, so v2 alone runs.)"""
    from google.cloud import pubsub_v1

    java, path = java_with_emulators, V2
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    prefix = f"projects/{PROJECT}/%s/attributes-{path}"
    source = publisher.create_topic(name=prefix % "topics" + "-in").name
    subscriber.create_subscription(name=prefix % "subscriptions" + "-in", topic=source)
    described = publisher.create_topic(name=prefix % "topics" + "-out").name
    described_sub = subscriber.create_subscription(name=prefix % "subscriptions" + "-out", topic=described).name
    again = publisher.create_topic(name=prefix % "topics" + "-again").name
    again_sub = subscriber.create_subscription(name=prefix % "subscriptions" + "-again", topic=again).name
    publisher.publish(source, b"plain").result(timeout=30)
    publisher.publish(source, b"tagged", colour="red", size="2").result(timeout=30)

    done, job_id = java.dataflow(
        "PubsubAttributes",
        described,
        path,
        f"--inputSubscription={prefix % 'subscriptions'}-in",
        f"--republished={again}",
        '--labels={"beamport_engine": "prism"}',
        given_input=False,
    )
    assert "SUBMITTED" in done.stdout, done.stdout
    api = Api(java.server.url, PROJECT)

    def pull(subscription: str, into: list, count: int) -> bool:
        pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=30).received_messages
        if pulled:
            into.extend(m.message for m in pulled)
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in pulled])
        return len(into) >= count

    descriptions: list = []
    wait_for("the descriptions", lambda: pull(described_sub, descriptions, 2), START_S, (api, job_id))
    assert sorted(m.data.decode() for m in descriptions) == ["plain||id", "tagged|colour=red,size=2|id"]
    republished: list = []
    wait_for("the republished messages", lambda: pull(again_sub, republished, 2), START_S, (api, job_id))
    assert sorted((m.data, dict(m.attributes)) for m in republished) == [
        (b"plain", {"via": "beamport"}),
        (b"tagged", {"colour": "red", "size": "2", "via": "beamport"}),
    ]
    assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=120)


def test_the_pubsub_emulator_answers_rest_and_grpc_on_one_port(java_with_emulators):
    """Pub/Sub's REST API as Beam Java's PubsubJsonClient calls it (gzipped bodies, JSON errors with REST's status)
    beside gRPC on PUBSUB_EMULATOR_HOST: what one publishes, the other pulls."""
    import gzip

    import httpx
    from google.cloud import pubsub_v1

    root = endpoints.java_options(endpoints.of(os.environ))["pubsubRootUrl"]
    topic, subscription = f"projects/{PROJECT}/topics/rest", f"projects/{PROJECT}/subscriptions/rest"
    with httpx.Client(base_url=f"{root}/v1/", timeout=30) as rest:
        missing = rest.get(topic)
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND", missing.text
        assert rest.put(topic, json={}).json() == {"name": topic}
        pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic)
        body = gzip.compress(json.dumps({"messages": [{"data": "aGVsbG8=", "attributes": {"k": "v"}}]}).encode())
        published = rest.post(f"{topic}:publish", content=body, headers={"Content-Encoding": "gzip"})
        assert published.status_code == 200 and len(published.json()["messageIds"]) == 1, published.text
        (received,) = (
            pubsub_v1.SubscriberClient().pull(subscription=subscription, max_messages=10, timeout=30).received_messages
        )
        assert (received.message.data, dict(received.message.attributes)) == (b"hello", {"k": "v"})
        pubsub_v1.PublisherClient().publish(topic, b"by grpc").result(timeout=30)
        pulled = rest.post(f"{subscription}:pull", json={"maxMessages": 10}).json()["receivedMessages"]
        assert [base64.b64decode(m["message"]["data"]) for m in pulled] == [b"by grpc"]
        acked = rest.post(f"{subscription}:acknowledge", json={"ackIds": [m["ackId"] for m in pulled]})
        assert acked.status_code == 200 and acked.json() == {}


def test_a_java_jobs_own_endpoints_stay(monkeypatch):
    """Staging adds only the options a Java job did not set: one it set names the service it wants."""
    from beamport.engine import staging

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9050/")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    options = {"jobName": "j", "bigQueryEndpoint": "https://bigquery.example.com"}
    staging._java_reaches_emulators(options)
    assert options == {
        "jobName": "j",
        "gcsEndpoint": "http://127.0.0.1:4443/storage/v1/",
        "bigQueryEndpoint": "https://bigquery.example.com",
        "pubsubRootUrl": "http://127.0.0.1:8085",
    }
    for name in endpoints.VARIABLES:
        monkeypatch.delenv(name)
    untouched = {"jobName": "j"}
    staging._java_reaches_emulators(untouched)
    assert untouched == {"jobName": "j"}
