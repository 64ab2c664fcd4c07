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

import json
import threading
from pathlib import Path

# The pipeline option naming the file (the Flink engine sets it).
OPTION = "beamport_metric_keys_file"


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
        from apache_beam.metrics import monitoring_infos

        new = []
        for info in infos:
            if not monitoring_infos.is_user_monitoring_info(info):
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


def key_of(info) -> tuple[str, str, str, str]:
    """A user metric's MonitoringInfo as its key: (step, namespace, name, URN)."""
    from apache_beam.metrics import monitoring_infos

    labels = info.labels
    return (
        labels.get(monitoring_infos.PTRANSFORM_LABEL, ""),
        labels.get(monitoring_infos.NAMESPACE_LABEL, ""),
        labels.get(monitoring_infos.NAME_LABEL, ""),
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
