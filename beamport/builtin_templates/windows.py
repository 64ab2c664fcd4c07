"""Fixed windows whose size is a template's runtime parameter, written into the pipeline so that staging can
make them Beam's own FixedWindows once the launch's parameters are known.

Beam's FixedWindows takes its size when the pipeline is built; a classic template's parameters come at launch.
A Python WindowFn that reads its size at run time would be pickled into the pipeline, which only Python SDK
workers can run: Beam's Flink runner refuses a pipeline whose windows are not Beam's standard ones. So this
WindowFn writes itself as `beamport:window_fn:runtime_fixed_windows:v1`, naming the option that holds its size,
and staging (engine/runtime_windows_staging.py) replaces it, before any engine sees the pipeline, with
`beam:window_fn:fixed_windows:v1` of the launch's size. The SDK still reads the URN back (the embedded engine of
a Beamport older than this, or a pipeline run elsewhere), as this WindowFn.
"""

from __future__ import annotations

import json
import re

from apache_beam.coders import coders
from apache_beam.options.value_provider import RuntimeValueProvider, StaticValueProvider
from apache_beam.transforms import window
from apache_beam.utils import urns
from apache_beam.utils.timestamp import Duration

RUNTIME_FIXED_WINDOWS = "beamport:window_fn:runtime_fixed_windows:v1"
_DURATION = re.compile(r"(\d+)([smh])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> int:
    """Google's window durations (DurationUtils): Ns, Nm or Nh, in seconds."""
    found = _DURATION.fullmatch(text.strip())
    if not found or int(found.group(1)) == 0:
        raise ValueError(f"windowDuration must be Ns, Nm or Nh (e.g. 30s, 5m, 1h), not {text!r}.")
    return int(found.group(1)) * _UNIT_S[found.group(2)]


def window_size_s(payload: bytes, options: dict) -> int:
    """The size, in seconds, of the runtime fixed windows `payload` describes, in a job with these options."""
    described = json.loads(payload)
    text = described.get("value") or options.get(described.get("option", "")) or described.get("default")
    return parse_duration(str(text or ""))


class RuntimeFixedWindows(window.NonMergingWindowFn):
    """FixedWindows whose size (Ns, Nm or Nh) is a ValueProvider: read at run time, or at staging."""

    def __init__(self, duration):
        self.duration = duration
        self._size = None

    def _size_s(self) -> int:
        if self._size is None:
            self._size = parse_duration(self.duration.get() or "5m")
        return self._size

    def assign(self, context):
        size = self._size_s() * 1_000_000
        micros = context.timestamp.micros
        start = window.Timestamp(micros=micros - micros % size)
        return [window.IntervalWindow(start, start + Duration(micros=size))]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()

    def to_runner_api_parameter(self, context):
        if isinstance(self.duration, RuntimeValueProvider):
            described = {"option": self.duration.option_name, "default": self.duration.default_value}
        else:
            described = {"value": self.duration.get()}
        return RUNTIME_FIXED_WINDOWS, json.dumps(described).encode()

    @staticmethod
    @urns.RunnerApiFn.register_urn(RUNTIME_FIXED_WINDOWS, bytes)
    def from_runner_api_parameter(payload, unused_context):
        described = json.loads(payload)
        if "value" in described:
            return RuntimeFixedWindows(StaticValueProvider(str, described["value"]))
        return RuntimeFixedWindows(RuntimeValueProvider(described["option"], str, described.get("default")))
