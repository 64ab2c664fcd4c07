"""A Beam plugin (beam_plugins) that the Prism engine adds to a job with a Go environment beside its Python ones:
the Python SDK worker's metric short ids get a prefix that Beam Go's never have.

Prism keeps one map of MonitoringInfo short ids per job, not one per SDK worker (jobservices/metrics.go,
shortIDsToKeys), and Beam's Python and Go SDK workers both number theirs from "1" (Python in hex, Go in base 36).
In a pipeline with both (a Go job's Pub/Sub transforms run in Python: engine/staging.py), Prism decodes one
worker's metric with the other's meaning and its stage panics ("error decoding metrics
beam:metric:sampled_byte_size:v1 ... EOF"). Every Python SDK worker imports its job's plugins before it runs a
bundle; this one replaces the worker's short id cache with one whose ids read `py-1`, `py-2`...
"""

from apache_beam.runners.worker import sdk_worker

PREFIX = "py-"  # '-' is neither a hex nor a base-36 digit


class PrefixedShortIds(sdk_worker.ShortIdCache):
    """Beam's short id cache, its ids prefixed."""

    def get_short_id(self, monitoring_info) -> str:
        return PREFIX + super().get_short_id(monitoring_info)

    def get_infos(self, short_ids):
        infos = super().get_infos(short.removeprefix(PREFIX) for short in short_ids)
        return {PREFIX + short: info for short, info in infos.items()}


if not isinstance(sdk_worker.SHORT_ID_CACHE, PrefixedShortIds):
    sdk_worker.SHORT_ID_CACHE = PrefixedShortIds()
