"""Staging's rewrite of Beam's native Pub/Sub transforms into Python transforms every engine runs.

Beam's DataflowRunner stages ReadFromPubSub's leaf as `beam:transform:pubsub_read:v1` and WriteToPubSub's as
`beam:transform:pubsub_write:v1`: transforms Dataflow runs natively, which Prism refuses, Flink cannot wire
and FnApiRunner drops. Each becomes a composite of beamport.io.pubsub's transforms, built as a small Beam
pipeline of their own and spliced in: the native transform keeps its id, name, input and output PCollections
and becomes the composite's root; the new transforms, PCollections, coders and windowing strategies come in
under ids of their own namespace (no clash with the job's), and run in the job's own Python environment.
The user's pickled code is not touched (the pipeline is not rebuilt from its proto).
"""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners import pipeline_context

from beamport.io.pubsub import ReadPubSub, WritePubSub
from beamport.protocol import PUBSUB_SPLICE_NAMESPACE

READ = common_urns.composites.PUBSUB_READ.urn
WRITE = common_urns.composites.PUBSUB_WRITE.urn
_ROOT = "Replacement"


def pubsub_reads(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """The unique names of the pipeline's native Pub/Sub reads."""
    return sorted(t.unique_name for t in pipeline.components.transforms.values() if t.spec.urn == READ)


def replace_pubsub_transforms(
    pipeline: beam_runner_api_pb2.Pipeline, python_environment: str, emulator_host: str | None = None
) -> int:
    """Replace the native Pub/Sub transforms in place; return how many there were.

    python_environment: the id of the job's Python SDK environment, which the new transforms run in.
    emulator_host: the Pub/Sub endpoint for them (default: this process's PUBSUB_EMULATOR_HOST).
    """
    if emulator_host is None:
        emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST") or None
    natives = [(tid, t) for tid, t in pipeline.components.transforms.items() if t.spec.urn in (READ, WRITE)]
    for number, (transform_id, native) in enumerate(natives):
        if native.spec.urn == READ:
            read = beam_runner_api_pb2.PubSubReadPayload.FromString(native.spec.payload)
            replacement: beam.PTransform = ReadPubSub(
                topic=resource_name(read.topic, "topics"),
                subscription=resource_name(read.subscription, "subscriptions"),
                timestamp_attribute=read.timestamp_attribute,
                id_attribute=read.id_attribute,
                with_attributes=read.with_attributes,
                emulator_host=emulator_host,
            )
        else:
            write = beam_runner_api_pb2.PubSubWritePayload.FromString(native.spec.payload)
            replacement = WritePubSub(
                topic=resource_name(write.topic, "topics"),
                timestamp_attribute=write.timestamp_attribute,
                id_attribute=write.id_attribute,
                emulator_host=emulator_host,
            )
        _splice(pipeline, transform_id, replacement, python_environment, f"{PUBSUB_SPLICE_NAMESPACE}{number}")
    return len(natives)


def resource_name(name: str, kind: str) -> str:
    """A topic's or subscription's name as Pub/Sub's API has it (`projects/P/topics/T`): Beam Java's runner writes
    its native transforms' names in PubsubIO's older form, `/topics/P/T` (`/subscriptions/P/S`)."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "" and parts[1] == kind:
        return f"projects/{parts[2]}/{kind}/{parts[3]}"
    return name


def _splice(
    pipeline: beam_runner_api_pb2.Pipeline,
    transform_id: str,
    replacement: beam.PTransform,
    environment: str,
    namespace: str,
) -> None:
    native = pipeline.components.transforms[transform_id]
    (native_input,) = native.inputs.values() or [None]
    (native_output,) = native.outputs.values() or [None]

    built = beam.Pipeline()
    if native_input is None:
        _ = built | _ROOT >> replacement
    else:  # a stand-in for the native transform's input, left out of the splice
        _ = built | "Input" >> beam.Impulse() | _ROOT >> replacement
    context = pipeline_context.PipelineContext(namespace=namespace)
    proto = built.to_runner_api(context=context)
    shutil.rmtree(built.local_tempdir, ignore_errors=True)  # Beam's Pipeline makes it; only run() removes it
    parts = proto.components
    root_id = next(tid for tid, t in parts.transforms.items() if t.unique_name == _ROOT)
    root = parts.transforms[root_id]

    # The built pipeline's PCollections that are the native transform's: its stand-in input, its output.
    renamed = {}
    if native_input is not None:
        (built_input,) = root.inputs.values()
        renamed[built_input] = native_input
    if native_output is not None:
        (built_output,) = root.outputs.values()
        renamed[built_output] = native_output

    def drop(tid: str) -> None:
        """A part of the native transform's own expansion (Beam Java's runner v2 keeps one under it), and the
        PCollections only it made: left in place, they would produce the output a second time."""
        transform = pipeline.components.transforms.pop(tid)
        for sub in transform.subtransforms:
            drop(sub)
        for pcoll in transform.outputs.values():
            if pcoll != native_output:
                pipeline.components.pcollections.pop(pcoll, None)

    for sub in native.subtransforms:
        drop(sub)

    def copy(tid: str) -> None:
        transform = beam_runner_api_pb2.PTransform()
        transform.CopyFrom(parts.transforms[tid])
        transform.unique_name = native.unique_name + transform.unique_name.removeprefix(_ROOT)
        for tag, pcoll in transform.inputs.items():
            transform.inputs[tag] = renamed.get(pcoll, pcoll)
        for tag, pcoll in transform.outputs.items():
            transform.outputs[tag] = renamed.get(pcoll, pcoll)
        if transform.environment_id:
            transform.environment_id = environment
        pipeline.components.transforms[tid].CopyFrom(transform)
        for sub in transform.subtransforms:
            copy(sub)

    for sub in root.subtransforms:
        copy(sub)
    for pcoll_id, pcoll in parts.pcollections.items():
        if pcoll_id not in renamed:
            pipeline.components.pcollections[pcoll_id].CopyFrom(pcoll)
    for coder_id, coder in parts.coders.items():
        pipeline.components.coders[coder_id].CopyFrom(coder)
    for strategy_id, strategy in parts.windowing_strategies.items():
        pipeline.components.windowing_strategies[strategy_id].CopyFrom(strategy)
    for requirement in proto.requirements:
        if requirement not in pipeline.requirements:
            pipeline.requirements.append(requirement)

    # The native transform is now the composite holding the new ones: no URN of its own left for an engine.
    native.ClearField("spec")
    native.environment_id = ""
    native.subtransforms[:] = list(root.subtransforms)
