"""Staging's resolution of a built-in template's runtime-sized windows into Beam's FixedWindows.

Cloud_PubSub_to_GCS_Text's window size is a runtime parameter (windowDuration), so its template holds windows
of Beamport's own URN (builtin_templates/windows.py) that name the option with the size. Once a launch has given
the options, they are replaced, in the WindowInto transform and in every windowing strategy, by
`beam:window_fn:fixed_windows:v1` of that size: every engine runs those (Beam's Flink runner runs no Python
WindowFn). The payload is read as JSON, never unpickled: staging runs no code of the job's.
"""

from __future__ import annotations

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2, standard_window_fns_pb2
from google.protobuf import duration_pb2

from beamport.builtin_templates.windows import RUNTIME_FIXED_WINDOWS, window_size_s
from beamport.errors import ApiError

FIXED_WINDOWS = common_urns.fixed_windows.urn
ASSIGN_WINDOWS = common_urns.primitives.ASSIGN_WINDOWS.urn


def resolve_runtime_windows(pipeline: beam_runner_api_pb2.Pipeline, options: dict) -> None:
    """Every runtime fixed windows of the pipeline -> Beam's FixedWindows of the size the options give."""
    for strategy in pipeline.components.windowing_strategies.values():
        _resolve(strategy.window_fn, options)
    for transform in pipeline.components.transforms.values():
        if transform.spec.urn == ASSIGN_WINDOWS:
            payload = beam_runner_api_pb2.WindowIntoPayload.FromString(transform.spec.payload)
            if _resolve(payload.window_fn, options):
                transform.spec.payload = payload.SerializeToString()


def _resolve(window_fn: beam_runner_api_pb2.FunctionSpec, options: dict) -> bool:
    if window_fn.urn != RUNTIME_FIXED_WINDOWS:
        return False
    try:
        size_s = window_size_s(window_fn.payload, options)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ApiError("INVALID_ARGUMENT", f"The pipeline's window size: {exc}") from None
    fixed = standard_window_fns_pb2.FixedWindowsPayload(size=duration_pb2.Duration(seconds=size_s))
    window_fn.CopyFrom(beam_runner_api_pb2.FunctionSpec(urn=FIXED_WINDOWS, payload=fixed.SerializeToString()))
    return True
