"""What the server asks of Beam, answered in the Beam sidecar (beamport/sidecar.py): plain data in (bytes,
strings, dicts), plain data out, never a Beam object. Importing this module imports Beam, and FnApiRunner's
fusion, so that the sidecar has them loaded before its first call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import apache_beam
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: F401  (loaded now: fused_stages uses it)
from google.protobuf.message import DecodeError

from beamport.errors import invalid_argument
from beamport.translate import compat
from beamport.translate.graph import fused_stages, job_graph, transform_display_data


def _pipeline(data: bytes, location: str) -> beam_runner_api_pb2.Pipeline:
    try:
        return beam_runner_api_pb2.Pipeline.FromString(data)
    except DecodeError as exc:
        raise invalid_argument(f"{location} is not a Beam pipeline: {exc}") from None


def describe_pipeline(data: bytes, location: str, sdk_pipeline_options: dict | None) -> dict:
    """A staged pipeline's graph, as jobs.create stores it: {"steps": [...], "pipelineDescription": {...}}.
    `location` (its pipelineUrl) names it in errors."""
    pipeline = _pipeline(data, location)
    return job_graph(pipeline, fused_stages(pipeline), sdk_pipeline_options=sdk_pipeline_options)


def update_incompatibilities(old: bytes, new: bytes, name_mapping: dict[str, str]) -> list[str]:
    """Why the new pipeline cannot take over the old one's state (an update): one sentence each; [] if it can."""
    running, replacement = _pipeline(old, "the running job's pipeline"), _pipeline(new, "the new pipeline")
    return compat.incompatibilities(running, replacement, name_mapping)


# How Beam Java's display data shows a ValueProvider option not given a value (a classic template's runtime
# parameter): RuntimeValueProvider.toString, also inside NestedValueProvider's.
_JAVA_RUNTIME_VALUE = re.compile(r"RuntimeValueProvider\{propertyName=([A-Za-z_$][\w$]*)")


def runtime_parameters(data: bytes, location: str) -> list[str]:
    """The runtime parameters a Beam Java pipeline's transforms show in their display data, sorted."""
    pipeline = _pipeline(data, location)
    found = set()
    for transform in pipeline.components.transforms.values():
        for item in transform_display_data(transform):
            found.update(_JAVA_RUNTIME_VALUE.findall(item.get("strValue", "")))
    return sorted(found)


def sdk_unbounded_sources(data: bytes, location: str, truncated: bool = False) -> list[str]:
    """The names of the transforms that start unbounded data in SDK code: a leaf in an SDK environment with an
    unbounded output and no unbounded input (PeriodicImpulse, an unbounded Read, Kafka's). Dataflow's native Pub/Sub
    read is none of them, though Beam Java stages it with an expansion of its own beneath: staging replaces it, whole,
    with Beamport's source. With `truncated`, splittable DoFns are left out: their remainder is truncated on drain
    (engine/harness_process.py, Drain). Sorted."""
    pipeline = _pipeline(data, location)
    transforms, collections = pipeline.components.transforms, pipeline.components.pcollections
    replaced: set[str] = set()
    pending = [i for i, t in transforms.items() if t.spec.urn == common_urns.composites.PUBSUB_READ.urn]
    while pending:
        replaced.add(transform_id := pending.pop())
        pending.extend(transforms[transform_id].subtransforms)

    def unbounded(ids) -> bool:
        return any(
            collections[i].is_bounded == beam_runner_api_pb2.IsBounded.UNBOUNDED for i in ids if i in collections
        )

    return sorted(
        t.unique_name
        for i, t in transforms.items()
        if i not in replaced
        and t.environment_id
        and not t.subtransforms
        and unbounded(t.outputs.values())
        and not unbounded(t.inputs.values())
        and not (truncated and _splittable(t))
    )


def _splittable(transform: beam_runner_api_pb2.PTransform) -> bool:
    """A splittable DoFn's ParDo (its payload names a restriction coder)."""
    if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
        return False
    payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
    return bool(payload.restriction_coder_id)


def beam_version() -> str:
    return apache_beam.__version__


CALLS: dict[str, Callable[..., Any]] = {
    "describe_pipeline": describe_pipeline,
    "update_incompatibilities": update_incompatibilities,
    "runtime_parameters": runtime_parameters,
    "sdk_unbounded_sources": sdk_unbounded_sources,
}
