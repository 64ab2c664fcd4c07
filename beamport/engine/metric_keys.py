"""The SDK worker's note of which user metrics the job's transforms report (step, namespace, name), for Flink.

Beam 2.62's Flink runner shows a running job's user metrics only as Flink operator metrics, named
`namespace.name` in the metric group of the fused stage's operator (FlinkMetricContainerBase): the step that
reported a metric is not in its name, and Flink's REST API writes ' ', '.', ':' and ',' as '_', so a name's
namespace cannot be told from its name either. The SDK worker knows both: each bundle's MonitoringInfos carry
the step (PTRANSFORM), namespace and name. Set up by `beamport.engine.sdk_boot` before it runs Beam's SDK worker
(for jobs that name a keys file), `record_to` has the worker append each user metric key it reports to that file,
once per worker process; a Java SDK harness's are noted from its control stream (`KeyNotes`, engine/java_boot.py).
The Flink engine reads the keys back (`read_keys`) to tell which Flink metric is which Beam metric
(FlinkRest.live_metrics); the values still come from Flink.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

# The pipeline option naming the file (the Flink engine sets it).
OPTION = "beamport_metric_keys_file"
# Beam's user metrics, as monitoring_infos.USER_METRIC_URNS names them (that module imports Beam's SDK; a Java or
# Go harness's launcher notes keys with Beam's protos alone: engine/beam_protos.py).
USER_METRIC_SPECS = (
    "USER_SUM_INT64",
    "USER_DISTRIBUTION_INT64",
    "USER_LATEST_INT64",
    "USER_SET_STRING",
    "USER_BOUNDED_TRIE",
    "USER_HISTOGRAM",
)


def record_to(path: str) -> None:
    """Make every bundle's user MonitoringInfos add their keys, not noted before, to `path` (JSON lines)."""
    from apache_beam.runners.worker import bundle_processor

    notes = KeyNotes(path)
    original = bundle_processor.BundleProcessor.monitoring_infos

    def noting(self):
        infos = original(self)
        notes.note(infos)
        return infos

    bundle_processor.BundleProcessor.monitoring_infos = noting  # type: ignore[method-assign]


class KeyNotes:
    """Notes the keys of user MonitoringInfos to `path` (JSON lines), each once per process."""

    def __init__(self, path: str):
        self.path = path
        self._noted: set[tuple] = set()
        self._lock = threading.Lock()

    def note(self, infos) -> None:
        new = []
        for info in infos:
            if info.urn not in user_metric_urns():
                continue
            key = key_of(info)
            with self._lock:
                if key[0] and key not in self._noted:
                    self._noted.add(key)
                    new.append(key)
        if new:
            try:
                # One write of whole lines in append mode: workers writing at once do not interleave.
                with open(self.path, "a") as out:
                    out.write("".join(json.dumps(list(key)) + "\n" for key in new))
            except OSError:
                with self._lock:
                    self._noted.difference_update(new)  # noted again with a later bundle


@functools.cache
def user_metric_urns() -> frozenset[str]:
    from apache_beam.portability import common_urns

    specs = common_urns.monitoring_info_specs
    return frozenset(getattr(specs, name).spec.urn for name in USER_METRIC_SPECS)


def key_of(info) -> tuple[str, str, str, str]:
    """A user metric's MonitoringInfo as its key: (step, namespace, name, URN)."""
    from apache_beam.portability import common_urns

    names = common_urns.monitoring_info_labels
    labels = info.labels
    return (
        labels.get(names.TRANSFORM.label_props.name, ""),
        labels.get(names.NAMESPACE.label_props.name, ""),
        labels.get(names.NAME.label_props.name, ""),
        info.urn,
    )


def read_keys(path: Path) -> set[tuple[str, str, str, str]]:
    """The keys the job's SDK workers noted so far: (step, namespace, name, urn)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return set()
    keys = set()
    for line in lines:
        try:
            step, namespace, name, urn = json.loads(line)
        except ValueError:
            continue  # a line being written
        keys.add((step, namespace, name, urn))
    return keys
