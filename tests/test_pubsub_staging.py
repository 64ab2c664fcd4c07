"""Staging's splice of Beam's native Pub/Sub transforms (engine/pubsub_staging.py), on a pipeline proto alone."""

from __future__ import annotations

import tempfile

from apache_beam.portability.api import beam_runner_api_pb2 as pb

from beamport.engine.pubsub_staging import READ, replace_pubsub_transforms


def test_splicing_a_native_read_leaves_no_temporary_directory(tmp_path, monkeypatch):
    """Each replacement is built as a Beam Pipeline, which makes a directory that only its run() removes: one left
    per Pub/Sub job in /tmp wherever the executor runs without a sandbox of its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pipeline = pb.Pipeline()
    read = pipeline.components.transforms["read"]
    read.unique_name = "ReadFromPubSub/Read"
    read.spec.urn = READ
    read.spec.payload = pb.PubSubReadPayload(subscription="projects/p/subscriptions/s").SerializeToString()
    read.outputs["None"] = "messages"
    pipeline.components.pcollections["messages"].unique_name = "messages"
    pipeline.root_transform_ids.append("read")

    assert replace_pubsub_transforms(pipeline, "python", "localhost:8085") == 1
    assert READ not in {t.spec.urn for t in pipeline.components.transforms.values()}
    assert list(tmp_path.iterdir()) == []
