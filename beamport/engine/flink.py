"""The Flink engine: jobs run on a Flink cluster through Beam's Flink job server; snapshots are savepoints.

Three services make the engine (scripts/flink-cluster starts all of them on one host; docs/engines.md):
Flink's REST API (`master`: the job's state, savepoints, cancel), Beam's Flink job server (`job_server`:
the Beam Job API, which translates the portable pipeline into a Flink job) and a Python SDK worker pool
(`sdk_pool`: where Flink's tasks start the SDK workers that run the pipeline's Python code).

A Flink job is named by its Beamport job id, so that whoever holds the id finds the job on the cluster:
the service (snapshots: `FlinkControl`), or a worker that takes over the work of a lost one (it adopts
the running Flink job instead of submitting it again).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import httpx

from beamport import wire
from beamport.config import FlinkConfig
from beamport.engine import metric_keys, sdk_boot
from beamport.engine.base import (
    DONE,
    DRAINED,
    FAILED,
    HANDED_OVER,
    JOB_TYPE_STREAMING,
    Engine,
    EngineError,
    RunObserver,
    RunResult,
    Savepoint,
    StagedJob,
    StageFigures,
    StreamingControl,
    savepoint_path,
)
from beamport.engine.capture import worker_log_service
from beamport.engine.portable import (
    JobService,
    external_environments,
    java_options,
    sdk_external_environments,
    user_metrics,
)
from beamport.engine.registry import FLINK
from beamport.errors import ApiError
from beamport.files import POLICY_VARIABLE
from beamport.polling import wait_until
from beamport.protocol import DRAIN_FILE_OPTION

log = logging.getLogger(__name__)

_ACTIVE = {"INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING", "RECONCILING", "SUSPENDED"}
_END_OF_TIME = 9223372036854775807  # Long.MAX_VALUE: Flink's watermark once the input is all read
_NO_WATERMARK = -9223372036854775808  # Long.MIN_VALUE: Flink's watermark before any has arrived
POLL_S = 1.0
# The user metrics Beam's Flink runner shows as Flink metrics while a job runs (FlinkMetricContainerBase), by
# their MonitoringInfo URNs: counters, distributions and gauges (monitoring_infos.USER_*_URN).
_LIVE_URNS = (
    "beam:metric:user:sum_int64:v1",
    "beam:metric:user:distribution_int64:v1",
    "beam:metric:user:latest_int64:v1",
)
# A distribution's Flink gauge as text: Beam's DistributionResult (an AutoValue) as it prints itself.
_DISTRIBUTION_TEXT = re.compile(r"DistributionResult\{sum=(-?\d+), count=(\d+), min=(-?\d+), max=(-?\d+)\}")
# How often the job's metrics are read while it runs (and once at its end): each reading is a REST call per vertex
# (FlinkEngine._report_metrics) to a JobManager that a busy machine already answers slowly, and what it reads of
# a running stage changes only as often as Flink's JobManager fetches it (metrics.fetcher.update-interval: 1 s on
# the clusters scripts/flink-cluster starts, Flink's default 10 s elsewhere). Read every 3 s, a Java job's drain
# took 20 s longer (tests/test_java_flink.py, on this 2-core machine): the readings share the engine's one thread.
METRICS_EVERY_S = 10.0
# The name part of a PCollection's element count among a stage's Flink metrics (element_count_names).
ELEMENT_COUNT_NAME = "metric:element_count:v1"
# Beam's Flink runner's accumulator of the job's metrics (FlinkMetricContainer.ACCUMULATOR_NAME).
METRICS_ACCUMULATOR = "__metricscontainers"
# How often, at most, a running vertex's metric names are listed again while a user metric the job's SDK workers
# noted is in none of the listings (FlinkRest.live_metrics): Flink lists a metric up to its fetcher interval after
# it appears (see METRICS_EVERY_S), and one that never appears (its stage ended, or its Flink name collided) should not
# cost a call at every reading.
LIST_AGAIN_S = 30.0
# How often a streaming job's stage figures (watermarks, element counts, throughput) are read: one REST call per
# vertex (FlinkRest.stage_figures). Flink's JobManager refreshes what it serves as often as
# metrics.fetcher.update-interval says (see METRICS_EVERY_S).
FIGURES_EVERY_S = 5.0
SUBMIT_TIMEOUT_S = 180.0
SAVEPOINT_TIMEOUT_S = 120.0
DRAIN_GRACE_S = 1.0  # how long a drained job may take to finish by itself before it is stopped
# How long after it runs a job's first stage must have passed its input on (times the attempt: a loaded
# machine starts SDK workers slowly), and how often a job whose first bundle was lost is submitted again
# (a safety net: the known cause, a checkpoint during the first bundle, is avoided in FlinkEngine._submit).
STALL_CHECK_S = 20.0
# Flink's REST API serves metrics its JobManager fetched up to metrics.fetcher.update-interval before (10 s by
# Flink's default, which another cluster may keep): a first bundle that looks lost is believed only if it still
# looks lost this long after.
METRICS_LAG_S = 15.0
START_CHECK_S = 3.0  # how often a job's first stage is looked at until it has passed something on
MAX_RESUBMITS = 3
# What the job server's translation throws when Beam's Flink runner does not support something the pipeline
# uses (e.g. "Unknown or unsupported WindowFn: beam:window_fn:pickled_python:v1", a Python WindowFn).
TRANSLATION_REFUSALS = ("java.lang.IllegalArgumentException", "java.lang.UnsupportedOperationException")
# A Java or Go job's besides: a batch job's stages run one after the other, each a task of its own, and Beam's
# Flink runner ends a stage's SDK harness with its task unless its environment is kept a while (Beam's
# PortablePipelineOptions.environmentCacheMillis): a JVM started, and the job's jars fetched, once per job rather
# than once per stage (about 13 s each here); a Go worker binary fetched once.
OTHER_SDK_OPTIONS = {"environment_cache_millis": 10000}
# Defaults for options the job may set itself (Beam's FlinkPipelineOptions, in Python's spelling).
DEFAULT_OPTIONS = {
    # Bundles of a streaming stage end at each checkpoint (and after max_bundle_time_mills): without
    # checkpoints, output of a streaming stage that gets no more input could wait forever.
    "checkpointing_interval": 5000,
    "max_bundle_time_mills": 500,
    # A failed job's last checkpoint is kept on the cluster (one cancelled or finished is not): the work's next
    # attempt starts from it (FlinkEngine.run), so what the failed job had read and counted is not done again.
    "externalized_checkpoints_enabled": True,
}
# Beamport's detector of the job server's jars to stage with a job (scripts/flink/src): none, on a cluster that
# runs from those jars already (FlinkConfig.beam_on_cluster). Each submission is then about ten seconds shorter.
NOTHING_TO_STAGE = {"pipeline_resources_detector_factory_class": "dev.beamport.flink.NothingToStage"}


class FlinkRest:
    """The few calls of Flink's REST API that Beamport makes."""

    def __init__(self, master: str, timeout: float = 10.0):
        self.base = master if master.startswith("http") else f"http://{master}"
        self.http = httpx.Client(timeout=timeout, follow_redirects=True)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            answer = self.http.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise EngineError(f"Flink's REST API at {self.base} cannot be reached: {exc}") from None
        if not answer.is_success:
            detail = answer.text[:500]
            raise EngineError(f"Flink answered {answer.status_code} to {method} {path}: {detail}")
        return answer.json() if answer.content.strip() else {}

    def find_job(self, name: str, active_only: bool = True) -> dict | None:
        """The newest Flink job of this name ({jid, name, state, ...}); only an active one if so asked."""
        jobs = [j for j in self._call("GET", "/jobs/overview").get("jobs", []) if j.get("name") == name]
        if active_only:
            jobs = [j for j in jobs if j.get("state") in _ACTIVE]
        return max(jobs, key=lambda j: j.get("start-time", 0)) if jobs else None

    def retained_checkpoint(self, name: str) -> tuple[str, dict] | None:
        """The newest checkpoint that Flink kept of a failed job of this name: (that job's id, the checkpoint's
        details, its `external_path` among them). A job started from such a checkpoint that failed again before
        completing its own points to the same one, through the older job."""
        failed = [
            job
            for job in self._call("GET", "/jobs/overview").get("jobs", [])
            if job.get("name") == name and job.get("state") == "FAILED"
        ]
        for job in sorted(failed, key=lambda j: j.get("start-time", 0), reverse=True):
            try:
                completed = (self._call("GET", f"/jobs/{job['jid']}/checkpoints").get("latest") or {}).get("completed")
            except EngineError as exc:
                log.info("no checkpoints of Flink job %s: %s", job["jid"], exc)
                continue
            if completed and completed.get("external_path") and not completed.get("discarded"):
                return job["jid"], completed
        return None

    def job(self, jid: str) -> dict:
        return self._call("GET", f"/jobs/{jid}")

    def cancel(self, jid: str) -> None:
        self._call("PATCH", f"/jobs/{jid}?mode=cancel")

    def root_exception(self, jid: str) -> str:
        try:
            return (self._call("GET", f"/jobs/{jid}/exceptions").get("root-exception") or "").strip()
        except EngineError:
            return ""

    def metric_results(self, jid: str, vertex_ids: list[str]):
        """The job's metrics (Beam's MetricResults: its MonitoringInfos, user and system) as Beam's Flink runner
        hands them to Flink, None while it has not. The runner puts them in an accumulator (what its job server
        reads once the job has ended) when a stage's operator closes: at the end of the job's tasks (finished,
        cancelled, failed), not while they run. Flink's REST API shows each vertex's accumulator as text: Beam's
        MetricResults in proto JSON (MonitoringInfos, attempted only). A transform's metrics are in the vertex
        that runs it; merged across vertices all the same, as Beam merges a stage's bundles."""
        from apache_beam.metrics import monitoring_infos
        from apache_beam.portability.api import beam_job_api_pb2
        from google.protobuf import json_format

        infos: list = []
        found = False
        for vertex in vertex_ids:
            try:
                accumulators = self._call("GET", f"/jobs/{jid}/vertices/{vertex}/accumulators")
            except EngineError as exc:
                log.info("no metrics for Flink job %s: %s", jid, exc)
                return None
            for accumulator in accumulators.get("user-accumulators", []):
                if accumulator.get("name") != METRICS_ACCUMULATOR:
                    continue
                try:
                    results = json_format.Parse(
                        json.dumps(json.loads(accumulator["value"]).get("metrics", {})),
                        beam_job_api_pb2.MetricResults(),
                        ignore_unknown_fields=True,
                    )
                except (ValueError, AttributeError, json_format.ParseError) as exc:  # another runner's text
                    log.info("unreadable metrics accumulator of Flink job %s: %s", jid, exc)
                    continue
                found = True
                infos.extend(results.attempted)
        if not found:
            return None
        return beam_job_api_pb2.MetricResults(attempted=list(monitoring_infos.consolidate(infos)))

    def live_metrics(
        self,
        jid: str,
        vertex_ids: list[str],
        keys: set[tuple],
        listed: dict[str, tuple[float, list[str]]],
        pcollections: dict[str, str] | None = None,
        steps: dict[str, frozenset[str]] | None = None,
    ) -> tuple[list, dict[str, int]]:
        """The running job's user metrics as Flink's operator metrics show them now (up to
        metrics.fetcher.update-interval old), as MonitoringInfos (attempted), summed over subtasks.

        Beam's Flink runner updates, at each bundle's end, a Flink counter per user counter and a Flink gauge per
        distribution (its text `DistributionResult{sum=.., count=.., min=.., max=..}`) and per gauge (its value),
        named `namespace.name` in the stage operator's metric group; the REST API lists them per vertex as
        `<subtask>.<operator>.<name>`, with ' ', '.', ':' and ',' written '_'. Which Beam metric a name is comes
        from `keys`, the (step, namespace, name, urn) the job's SDK workers reported (beamport.engine.metric_keys):
        a name that more than one key would take (the same namespace and name in two steps, or names that differ
        only in those characters) is left out, never guessed; so is a gauge whose subtasks disagree (Flink keeps
        no time for it: which is the latest is unknown). `listed` caches each vertex's metric names (when listed,
        which), listed again while a key's metric is in no listing yet, at most every LIST_AGAIN_S: in the end one
        call per vertex with user metrics per reading.

        Also the element counts of `pcollections` (each one's Flink name: `element_count_name`, to its id): the
        runner sets a Flink counter per PCollection a stage's bundles count, `<pcollection>.metric:element_count:v1`
        (its system metric's name). A stage counts what it produces and what it takes in, so a PCollection between
        two stages is in both their vertices: its count is the larger, summed over each one's subtasks. Answers
        (the user metrics as MonitoringInfos, the element counts by PCollection id); `steps` gets, by vertex, the
        steps whose metrics it holds (which steps a stage runs: where a source's lag goes)."""
        by_name: dict[str, list[tuple]] = {}
        for key in keys:
            if key[3] in _LIVE_URNS:
                by_name.setdefault(_flink_metric_name(key[1], key[2]), []).append(key)
        wanted = {name: found[0] for name, found in by_name.items() if len(found) == 1}
        counted = pcollections or {}
        if not wanted and not counted:
            return [], {}
        seen = {name for _, ids in listed.values() for name in _names(ids)}
        missing = bool(set(wanted) - seen)  # a metric not in Flink's listing yet (it lags), or never there
        values: dict[tuple, list[str]] = {}
        counts: dict[str, int] = {}
        for vertex in vertex_ids:
            path = f"/jobs/{jid}/vertices/{vertex}/metrics"
            uncounted = bool(counted) and vertex in listed and not any(n in counted for n in _names(listed[vertex][1]))
            if vertex not in listed or (
                (missing or uncounted) and time.monotonic() - listed[vertex][0] >= LIST_AGAIN_S
            ):
                names = [m["id"] for m in self._call("GET", path) if _split_metric_id(m["id"])[1]]
                listed[vertex] = (time.monotonic(), names)
            ids = [i for i in listed[vertex][1] if (n := _split_metric_id(i)[1]) in wanted or n in counted]
            in_vertex: dict[str, int] = {}
            holds: set[str] = set()
            for query in _queries(ids):
                for metric in self._call("GET", f"{path}?get={query}"):
                    name = _split_metric_id(metric.get("id", ""))[1]
                    if metric.get("value") is None:
                        continue
                    if name in wanted:
                        values.setdefault(wanted[name], []).append(str(metric["value"]))
                        holds.add(wanted[name][0])
                    elif name in counted and (count := _whole(metric["value"])) is not None:
                        in_vertex[counted[name]] = in_vertex.get(counted[name], 0) + count
            for pcollection, count in in_vertex.items():
                counts[pcollection] = max(counts.get(pcollection, 0), count)
            if steps is not None and holds:
                steps[vertex] = frozenset(holds)
        return [info for key, texts in values.items() if (info := _live_info(key, texts)) is not None], counts

    def first_stage_counts(self, jid: str, vertices: list[dict]) -> tuple[int, int] | None:
        """What the job's first stage took in and passed on (its operators after the source), as Flink's
        metrics say (up to metrics.fetcher.update-interval old; 0, 0 before they exist); None for a job whose
        first stage is not an Impulse that later stages wait for. Took some, passed nothing on: the symptom of
        a first bundle lost at start-up (see FlinkEngine._follow)."""
        if len(vertices) < 2 or not vertices[0].get("name", "").startswith("Source: Impulse"):
            return None
        first = vertices[0]["id"]
        names = [m["id"] for m in self._call("GET", f"/jobs/{jid}/vertices/{first}/metrics")]
        wanted = [
            n
            for n in names
            if n.endswith((".numRecordsIn", ".numRecordsOut")) and "Source__" not in n and n.count(".") >= 2
        ]
        if not wanted:
            return 0, 0
        query = ",".join(urllib.parse.quote(n, safe="") for n in wanted)
        values = {
            m["id"]: int(float(m["value"]))
            for m in self._call("GET", f"/jobs/{jid}/vertices/{first}/metrics?get={query}")
        }
        took = sum(v for k, v in values.items() if k.endswith(".numRecordsIn"))
        passed = sum(v for k, v in values.items() if k.endswith(".numRecordsOut"))
        return took, passed

    def stage_figures(
        self, jid: str, vertices: list[dict], names: dict[str, list[str]], steps: dict[str, frozenset[str]]
    ) -> dict[str, StageFigures]:
        """The figures Flink keeps of each vertex (a fused stage; by its name), aggregated over its subtasks: its
        tasks' input watermark (`currentInputWatermark`, the minimum), its operators' output watermarks (the
        minimum: the watermark the stage passes on), its records in and out and their rate (the sum); and the
        steps it runs, as far as `steps` knows (by vertex id: those whose metrics it holds, `live_metrics`). One
        call per vertex; `names` caches each vertex's metric names (listed once, while it lacks its watermarks)."""
        now = wire.now_us()
        figures = {}
        for vertex in vertices:
            path = f"/jobs/{jid}/vertices/{vertex['id']}/subtasks/metrics"
            wanted = names.get(vertex["id"])
            if not wanted or not any(n.endswith("Watermark") for n in wanted):
                listed = [m["id"] for m in self._call("GET", path)]
                wanted = names[vertex["id"]] = [
                    n for n in listed if n in _TASK_FIGURES or n.endswith(_OPERATOR_FIGURES)
                ]
            if not wanted:
                continue
            query = ",".join(urllib.parse.quote(n, safe="") for n in wanted)
            values = {m["id"]: m for m in self._call("GET", f"{path}?get={query}&agg=min,sum")}
            output_marks = [m.get("min") for n, m in values.items() if n.endswith(".currentOutputWatermark")]
            figures[vertex["name"]] = StageFigures(
                measured_us=now,
                input_watermark_us=_watermark_us((values.get("currentInputWatermark") or {}).get("min")),
                output_watermark_us=_least_watermark_us(output_marks),
                elements_in=_whole((values.get("numRecordsIn") or {}).get("sum")),
                elements_out=_whole((values.get("numRecordsOut") or {}).get("sum")),
                elements_out_per_s=_number((values.get("numRecordsOutPerSecond") or {}).get("sum")),
                transforms=steps.get(vertex["id"], frozenset()),
            )
        return figures

    def at_end_of_time(self, jid: str) -> bool:
        """Whether every task that has inputs has seen the final watermark (all windows have fired)."""
        seen = False
        for vertex in self.job(jid).get("vertices", []):
            marks = self._call("GET", f"/jobs/{jid}/vertices/{vertex['id']}/watermarks")
            inputs = [int(m["value"]) for m in marks if m.get("id", "").endswith("currentInputWatermark")]
            if inputs:
                seen = True
                if min(inputs) < _END_OF_TIME:
                    return False
        return seen

    def savepoint(self, jid: str, directory: Path, timeout: float = SAVEPOINT_TIMEOUT_S) -> str:
        """Take a savepoint of a running job under `directory`, without stopping it; its location."""
        directory.mkdir(parents=True, exist_ok=True)
        body = {"target-directory": directory.resolve().as_uri(), "cancel-job": False, "formatType": "CANONICAL"}
        trigger = self._call("POST", f"/jobs/{jid}/savepoints", body)["request-id"]
        return self._savepoint_taken(jid, trigger, timeout)

    def stop_draining(self, jid: str, directory: Path, timeout: float = SAVEPOINT_TIMEOUT_S) -> str:
        """Stop a running job with a savepoint under `directory` and Flink's drain: its sources stop, and every
        operator finishes what it holds (bundles in flight, output buffered at a checkpoint) before the job ends
        FINISHED. The savepoint's location."""
        directory.mkdir(parents=True, exist_ok=True)
        body = {"targetDirectory": directory.resolve().as_uri(), "drain": True, "formatType": "CANONICAL"}
        trigger = self._call("POST", f"/jobs/{jid}/stop", body)["request-id"]
        return self._savepoint_taken(jid, trigger, timeout)

    def stop_with_savepoint(self, jid: str, directory: Path, timeout: float = SAVEPOINT_TIMEOUT_S) -> str:
        """Stop a running job with a savepoint under `directory`, without Flink's drain: its sources stop where
        they are, the savepoint holds their positions and every operator's state, and the job ends FINISHED
        having processed nothing after it. The savepoint's location."""
        directory.mkdir(parents=True, exist_ok=True)
        body = {"targetDirectory": directory.resolve().as_uri(), "drain": False, "formatType": "CANONICAL"}
        trigger = self._call("POST", f"/jobs/{jid}/stop", body)["request-id"]
        return self._savepoint_taken(jid, trigger, timeout)

    def stopped_with_savepoint(self, jid: str) -> str | None:
        """The location of the savepoint a job that ended was stopped with (stop_with_savepoint or
        stop_draining: Flink's synchronous savepoint), if it was."""
        try:
            latest = self._call("GET", f"/jobs/{jid}/checkpoints").get("latest") or {}
        except EngineError as exc:
            log.info("no checkpoints of Flink job %s: %s", jid, exc)
            return None
        savepoint = latest.get("savepoint") or {}
        if savepoint.get("checkpoint_type") == "SYNC_SAVEPOINT" and not savepoint.get("discarded"):
            return savepoint.get("external_path") or None
        return None

    def handed_over(self, name: str) -> str | None:
        """The savepoint the newest Flink job of this name was stopped with, if it ended so (FINISHED)."""
        newest = self.find_job(name, active_only=False)
        if newest is None or newest.get("state") != "FINISHED":
            return None
        return self.stopped_with_savepoint(newest["jid"])

    def _savepoint_taken(self, jid: str, trigger: str, timeout: float) -> str:
        status = wait_until(lambda: self._call("GET", f"/jobs/{jid}/savepoints/{trigger}"), _completed, timeout, 0.2)
        if status is None:
            raise EngineError(f"Flink's savepoint of job {jid} did not complete within {timeout:.0f} s.") from None
        operation = status.get("operation") or {}
        if operation.get("failure-cause"):
            cause = operation["failure-cause"].get("stack-trace", "").splitlines()
            raise EngineError(f"Flink could not take the savepoint: {cause[0] if cause else 'unknown cause'}")
        return operation["location"]


# The figures FlinkRest.stage_figures reads: its tasks' (by name) and its operators' (by the end of their names).
_TASK_FIGURES = ("currentInputWatermark", "numRecordsIn", "numRecordsOut", "numRecordsOutPerSecond")
_OPERATOR_FIGURES = (".currentOutputWatermark",)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _whole(value) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _watermark_us(value) -> int | None:
    """A Flink watermark (ms since the epoch) in µs; None for none yet, or for the end of time (the input is all
    read: the stage's age and lag no longer mean anything)."""
    number = _number(value)
    if number is None or number <= _NO_WATERMARK or number >= _END_OF_TIME:
        return None
    return int(number) * 1000


def _least_watermark_us(marks: list) -> int | None:
    """The watermark a chain of operators passes on: the least of theirs, leaving out those at the end of time
    (an Impulse, once it has fired); None while one has none yet."""
    numbers = [_number(mark) for mark in marks]
    if not numbers or any(n is None or n <= _NO_WATERMARK for n in numbers):
        return None
    return _watermark_us(min(n for n in numbers if n is not None))


def _flink_metric_name(namespace: str, name: str) -> str:
    """The name Flink's REST API gives a Beam metric: Beam's `namespace.name` (FlinkMetricContainerBase, with
    Flink's default scope delimiter) as Flink's metric query service writes it (' ', '.', ':', ',' as '_')."""
    return re.sub(r"[ .:,]", "_", f"{namespace}.{name}")


def element_count_names(pipeline) -> dict[str, str]:
    """The Flink names of the element counts of the pipeline's PCollections (to their ids): the runner names a
    system metric `<PCollection label>.<its URN after "beam:">`. Ids whose names collide are left out."""
    names: dict[str, list[str]] = {}
    for pcollection in pipeline.components.pcollections:
        names.setdefault(_flink_metric_name(pcollection, ELEMENT_COUNT_NAME), []).append(pcollection)
    return {name: ids[0] for name, ids in names.items() if len(ids) == 1}


def _queries(ids: list[str], longest: int = 3000) -> list[str]:
    """`get` parameters naming these metrics, each short enough for Flink's REST server, which refuses a request
    line longer than 4096 characters (Netty's default): one for a vertex's few user metrics, more for many."""
    queries: list[str] = []
    for quoted in (urllib.parse.quote(i, safe="") for i in ids):
        if queries and len(queries[-1]) + 1 + len(quoted) <= longest:
            queries[-1] += "," + quoted
        else:
            queries.append(quoted)
    return queries


def _names(metric_ids: list[str]) -> set[str]:
    return {_split_metric_id(i)[1] for i in metric_ids}


def _split_metric_id(metric_id: str) -> tuple[str, str]:
    """A vertex's operator metric id, `<subtask>.<operator>.<name>` (neither of the last two holds a '.'), as
    (subtask, name); ("", "") for a task's own metric (`<subtask>.<name>`) or a metric of a nested group."""
    parts = metric_id.split(".")
    return (parts[0], parts[2]) if len(parts) == 3 and parts[0].isdigit() else ("", "")


def _live_info(key: tuple, texts: list[str]):
    """One user metric's MonitoringInfo from its subtasks' values as Flink shows them; None if they cannot be
    read as that metric (or, for a gauge, disagree)."""
    from apache_beam.metrics import monitoring_infos
    from apache_beam.metrics.cells import DistributionData, GaugeData

    step, namespace, name, urn = key
    try:
        if urn == monitoring_infos.USER_COUNTER_URN:
            return monitoring_infos.int64_user_counter(namespace, name, sum(int(t) for t in texts), ptransform=step)
        if urn == monitoring_infos.USER_GAUGE_URN:
            if len(set(texts)) != 1:
                return None
            gauge = GaugeData(int(texts[0]), timestamp=int(time.time()))
            return monitoring_infos.int64_user_gauge(namespace, name, gauge, ptransform=step)
        parts = [_DISTRIBUTION_TEXT.fullmatch(t.strip()) for t in texts]
        figures = [tuple(int(x) for x in m.groups()) for m in parts if m is not None]
        if len(figures) != len(texts) or not any(f[1] for f in figures):
            return None
        figures = [f for f in figures if f[1]]  # (sum, count, min, max); a subtask with none has no min or max
        totals, counts, least, most = zip(*figures, strict=True)
        data = DistributionData(sum(totals), sum(counts), min(least), max(most))
        return monitoring_infos.int64_user_distribution(namespace, name, data, ptransform=step)
    except ValueError:
        return None


def _completed(status: dict) -> bool:
    """A savepoint's status says it is done (taken or failed)."""
    return status.get("status", {}).get("id") == "COMPLETED"


def _warning(text: str) -> logging.LogRecord:
    """A record for the job's messages (RunObserver.log): a JOB_MESSAGE_WARNING."""
    return logging.LogRecord("beamport.engine.flink", logging.WARNING, __file__, 0, text, None, None)


def _info(text: str) -> logging.LogRecord:
    """A record for the job's messages (RunObserver.log): a JOB_MESSAGE_BASIC."""
    return logging.LogRecord("beamport.engine.flink", logging.INFO, __file__, 0, text, None, None)


def directory_size(path: Path) -> int:
    """The bytes of a savepoint's files (links, which the cluster may have put there, not followed)."""
    return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class FlinkControl(StreamingControl):
    """Snapshots of running jobs as Flink savepoints, for the service layer."""

    name = FLINK.name

    def __init__(self, config: FlinkConfig):
        self.config = config
        self.rest = FlinkRest(config.master)

    def savepoint(self, job_id: str, directory: Path, stop: bool = False) -> Savepoint:
        found = self.rest.find_job(job_id)
        if found is None or found.get("state") != "RUNNING":
            stopped = self._stopped_with_savepoint(job_id, directory) if stop else None
            if stopped is not None:
                return stopped
            state = found.get("state") if found else "not on the cluster"
            raise EngineError(f"Job {job_id} is not running on Flink ({state}): there is no state to save.")
        if stop:
            location = self.rest.stop_with_savepoint(found["jid"], directory)
        else:
            location = self.rest.savepoint(found["jid"], directory)
        return Savepoint(location=location, size_bytes=directory_size(savepoint_path(location)))

    def _stopped_with_savepoint(self, job_id: str, directory: Path) -> Savepoint | None:
        """An update's stop again (a server that stopped in the middle of one resumes it): the job's run was
        stopped with a savepoint, whose state is the job's; a copy of it under `directory` (Flink's savepoints
        are relocatable), so that the new snapshot owns its data."""
        location = self.rest.handed_over(job_id)
        if location is None or not savepoint_path(location).is_dir():
            return None
        copy = directory / savepoint_path(location).name
        # Links as links: the cluster (sandboxed, its savepoints writable to what it runs) may have put one there,
        # and this server, outside the sandbox, would otherwise copy what it names into the snapshot.
        shutil.copytree(savepoint_path(location), copy, symlinks=True)
        return Savepoint(location=copy.resolve().as_uri(), size_bytes=directory_size(copy))

    def stop(self, job_id: str) -> None:
        found = self.rest.find_job(job_id)
        if found is not None:
            self.rest.cancel(found["jid"])

    def discard(self, location: str) -> None:
        shutil.rmtree(savepoint_path(location), ignore_errors=True)


class FlinkEngine(Engine):
    """Runs a staged job on Flink and follows it until it ends (or is drained, or stopped)."""

    def __init__(self, config: FlinkConfig, restore_from: str | None = None, state_names: dict | None = None):
        self.config = config
        self.rest = FlinkRest(config.master)
        self.restore_from = restore_from  # a savepoint location to start from (snapshots, update)
        # {new transform name: the name its state was saved under}: an update's transformNameMapping, reversed.
        self.state_names = state_names or {}
        self._drain = threading.Event()
        self.flink_job_id: str | None = None
        self._job_id: str | None = None
        self._logs = ""  # the address of the logging service the job's SDK workers send their logs to
        # The job server's invocation being submitted (stop cancels it there until the Flink job is found).
        self._submission: tuple[JobService, str] | None = None
        self._count_names: dict[str, str] = {}  # its PCollections' element counts' Flink names (live_metrics)
        self._steps: dict[str, frozenset[str]] = {}  # by vertex id, the steps whose metrics it holds (live_metrics)

    # -- called from other threads -----------------------------------------------------------

    def request_drain(self) -> bool:
        """Stop reading, fire every window, flush, then end DRAINED (see beamport.io.local_log)."""
        self._drain.set()
        return True

    def stop(self) -> None:
        """Cancel the Flink job now (the job was cancelled, or its work moved): best effort, brief."""
        jid, submission = self.flink_job_id, self._submission
        try:
            if jid is None and self._job_id:  # stopped while submitting: the job may just have arrived
                jid = (self.rest.find_job(self._job_id) or {}).get("jid")
            if jid:
                self.rest.cancel(jid)
            elif submission is not None:  # not on the cluster yet: the job server would still submit it
                submission[0].cancel(submission[1])
        except EngineError as exc:
            log.warning("could not cancel the Flink job of %s: %s", self._job_id, exc)

    # -- the run ------------------------------------------------------------------------------

    def run(self, job: StagedJob, observer: RunObserver) -> RunResult:
        self._job_id = job.job_id
        self._count_names = element_count_names(job.pipeline)
        drain_file = self.config.drain_file(job.job_id)
        try:
            # At a socket of the job's in the shared directory: the job's SDK workers reconnect to it, so a
            # worker that adopts the job (below) gets their logs from then on.
            with worker_log_service(observer.log, self.config.shared_dir / "logs" / job.job_id) as self._logs:
                found = self.rest.find_job(job.job_id)
                handed_over = self._stopped_for_an_update(job, drain_file) if found is None else None
                ended = None
                if found is None and not handed_over:
                    ended = self._ended_while_no_one_followed(job, drain_file)
                if ended is not None:
                    return ended
                if found is not None:  # a worker before this one submitted it, and was lost: follow it
                    jid = self.flink_job_id = found["jid"]
                    observer.log(
                        _info(f"This worker follows the job's run on Flink (job {jid}), which went on without one.")
                    )
                else:
                    if handed_over:
                        self.restore_from = handed_over
                        observer.log(
                            _info(
                                f"The job's run was stopped with a savepoint for an update that did not take over: "
                                f"it goes on from that savepoint ({handed_over})."
                            )
                        )
                    else:
                        self._restart_from_checkpoint(job, observer)
                    drain_file.unlink(missing_ok=True)
                    jid = self.flink_job_id = self._submit(job, drain_file)
                result = self._follow(jid, job, observer, drain_file)
                self.config.metric_keys_file(job.job_id).unlink(missing_ok=True)  # the Flink job has ended
                return result
        except EngineError as exc:
            return RunResult(FAILED, str(exc))

    def _stopped_for_an_update(self, job: StagedJob, drain_file: Path) -> str | None:
        """The savepoint the job's newest Flink job was stopped with for an update (HANDED_OVER), when that update
        did not take over and this job's work goes on: the job starts again from it."""
        if drain_file.exists() or job.job_type != JOB_TYPE_STREAMING:
            return None  # (a drain's end is stopped with a savepoint too: the job ended)
        return self.rest.handed_over(job.job_id)

    def _ended_while_no_one_followed(self, job: StagedJob, drain_file: Path) -> RunResult | None:
        """The result of the job's Flink job if it ended well while no worker followed it (its worker was lost
        as it finished, or while it drained): submitting it again would read and write it all again."""
        newest = self.rest.find_job(job.job_id, active_only=False)
        if newest is None:
            return None
        state, drained = newest.get("state"), drain_file.exists()
        if state == "FINISHED" or (state == "CANCELED" and drained):  # a drain's end: finished, or stopped once flushed
            log.info("Flink job %s of job %s ended (%s) while no worker followed it", newest["jid"], job.job_id, state)
            return RunResult(DRAINED if drained else DONE)
        return None

    def _restart_from_checkpoint(self, job: StagedJob, observer: RunObserver) -> None:
        """An earlier attempt's Flink job failed (past Flink's own restarts): start from its last checkpoint, as
        Dataflow restarts a streaming job's work from its persisted state, rather than from the sources' start
        (which would read, count and write again what the failed job had)."""
        retained = self.rest.retained_checkpoint(job.job_id)
        if retained is None:
            return  # it failed before its first checkpoint: from the start (or the snapshot it started from)
        failed_jid, checkpoint = retained
        self.restore_from = checkpoint["external_path"]
        observer.log(
            _info(
                f"Flink job {failed_jid} of job {job.job_id} failed: the job starts again from its checkpoint "
                f"{checkpoint.get('id')} ({checkpoint['external_path']}), with the state and input positions it held."
            )
        )

    def _submit(self, job: StagedJob, drain_file: Path) -> str:
        pipeline = external_environments(job, self.config.sdk_pool)
        sdk_external_environments(pipeline, job, self.config.sdk_pool)
        rename_transforms(pipeline, self.state_names)
        given = java_options(job) if job.java_environments else job.options
        if job.java_environments or job.go_environments:
            given = {**OTHER_SDK_OPTIONS, **given}
        options = {**DEFAULT_OPTIONS, **(NOTHING_TO_STAGE if self.config.beam_on_cluster else {}), **given}
        options.update(
            job_name=job.job_id,  # the Flink job's name: how Beamport finds it again
            runner="PortableRunner",
            # A checkpoint that comes while a bundle is open ends the bundle, and by default Beam's Flink runner
            # keeps that bundle's output in the checkpoint, to pass it on only when the stage starts its next
            # bundle or gets a watermark (DoFnOperator.snapshotState, flushBuffer). A job's first stage gets
            # Impulse's one element and, at once, its final watermark: nothing comes after, so a checkpoint
            # in its first bundle kept that output for good and the job read nothing (the "lost first
            # bundle", about one job in ten). Finished before the checkpoint, the bundle's output goes on.
            finish_bundle_before_checkpointing=True,
            streaming=job.job_type == JOB_TYPE_STREAMING,
        )
        options[DRAIN_FILE_OPTION] = str(drain_file)
        options[sdk_boot.LOGGING_ENDPOINT_OPTION] = self._logs  # the SDK workers' logs: to observer.log
        # Where the job's SDK workers note which user metrics its steps report (beamport.engine.metric_keys).
        keys_file = self.config.metric_keys_file(job.job_id)
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        options[metric_keys.OPTION] = str(keys_file)
        options[sdk_boot.CASED_OPTIONS] = sdk_boot.cased_options(options)
        # This executor's file policy (staging exported it), for the built-in templates' checks in the SDK workers.
        options[sdk_boot.FILE_POLICY_OPTION] = os.environ.get(POLICY_VARIABLE, "")
        if self.restore_from:
            options["savepoint_path"] = self.restore_from
        service = JobService(self.config.job_server, "Beam's Flink job server")
        submitted_ms = time.time() * 1000 - 1000  # a job of this name from before (resubmitted) is not this one
        invocation = service.submit(job.job_id, pipeline, options)
        self._submission = (service, invocation)

        def on_the_cluster() -> str | None:  # the job server translates, then submits to the cluster
            found = self.rest.find_job(job.job_id, active_only=False)
            if found is not None and found.get("start-time", 0) >= submitted_ms:
                return found["jid"]
            if service.state(invocation) in ("FAILED", "CANCELLED"):
                errors = service.errors(invocation)
                message = "Beam's Flink job server could not translate or submit the job" + (
                    f": {errors[-1]}" if errors else "; its log says why."
                )
                if errors and any(refusal in errors[-1] for refusal in TRANSLATION_REFUSALS):
                    # The same pipeline is refused the same way on every attempt: the job fails now.
                    raise ApiError(
                        "FAILED_PRECONDITION",
                        f"{message} Beam's Flink runner cannot run this pipeline (a transform or window function "
                        "it does not support); run it on another engine (the label beamport_engine=prism).",
                    )
                raise EngineError(message)
            return None

        jid = wait_until(on_the_cluster, lambda jid: jid is not None, SUBMIT_TIMEOUT_S, 0.5)
        self._submission = None
        if jid is None:
            raise EngineError(f"The job did not reach the Flink cluster within {SUBMIT_TIMEOUT_S:.0f} s.")
        return jid

    def _follow(self, jid: str, job: StagedJob, observer: RunObserver, drain_file: Path) -> RunResult:
        streaming = job.job_type == JOB_TYPE_STREAMING
        running_since = None  # when the job was first seen RUNNING (for the start-up check)
        started = False  # its first stage has passed its input on (checked once, STALL_CHECK_S after it runs)
        resubmits = 0
        looked_lost = None  # when the first bundle first looked lost (Flink's metrics lag: see METRICS_LAG_S)
        start_checked = 0.0  # when the first stage's counts were last read (until it has started)
        draining = False
        ended_at = None  # when a draining job was first seen with every watermark at the end of time
        stages: dict[str, str] = {}
        reported_running = False
        metrics_read = 0.0
        figures_read = 0.0
        figure_names: dict[str, list[str]] = {}  # each vertex's metric names (FlinkRest.stage_figures)
        listed: dict[str, tuple[float, list[str]]] = {}  # each vertex's operator metric names (live_metrics)
        while True:
            try:
                details = self.rest.job(jid)
            except EngineError as exc:
                log.warning("%s", exc)
                time.sleep(POLL_S)
                continue
            state = details.get("state")
            self._report_stages(details, stages, observer)
            if state not in _ACTIVE or time.monotonic() - metrics_read >= METRICS_EVERY_S:
                metrics_read = time.monotonic()
                self._report_metrics(jid, state, details, observer, listed)
            if streaming and state == "RUNNING" and time.monotonic() - figures_read >= FIGURES_EVERY_S:
                figures_read = time.monotonic()
                try:
                    figures = self.rest.stage_figures(jid, details.get("vertices", []), figure_names, self._steps)
                except EngineError as exc:  # a slow JobManager: read again at the next turn
                    log.info("no stage figures of Flink job %s: %s", jid, exc)
                else:
                    if figures:
                        observer.stage_figures(figures)
            if state == "FINISHED":
                if not reported_running:  # it ran, within one look: RUNNING before DONE, as on Dataflow
                    observer.running(f"Flink (job {jid} on {self.config.master})")
                if streaming and not draining and self.rest.stopped_with_savepoint(jid):
                    return RunResult(HANDED_OVER)  # an update's: the job that takes over goes on from its savepoint
                return RunResult(DRAINED if draining else DONE)
            if state == "FAILED":
                return RunResult(FAILED, self.rest.root_exception(jid) or "The Flink job failed.")
            if state == "CANCELED":
                if draining:
                    return RunResult(DRAINED)
                return RunResult(FAILED, "The Flink job was cancelled on the cluster, not through Beamport.")
            if state == "RUNNING" and running_since is None:
                running_since = time.monotonic()
            if not reported_running and state == "RUNNING" and (not streaming or _all_tasks_running(details)):
                # A streaming job: only once every task runs can Flink take a savepoint (a snapshot), so only then
                # is the job RUNNING. A batch job's stages run one after another (the next one's tasks wait for
                # the last one's): it runs as soon as its Flink job does.
                reported_running = True
                observer.running(f"Flink (job {jid} on {self.config.master})")
            if running_since is not None and not started and time.monotonic() - start_checked >= START_CHECK_S:
                # Started as soon as its first stage has passed something on; lost only if, past the time a
                # start may take, it took its input and passed nothing on, and still so METRICS_LAG_S later.
                start_checked = time.monotonic()
                counts = self.rest.first_stage_counts(jid, details.get("vertices", []))
                overdue = time.monotonic() - running_since > STALL_CHECK_S * (resubmits + 1)
                lost = counts is not None and counts[0] > 0 and counts[1] == 0
                started = counts is None or counts[1] > 0 or resubmits >= MAX_RESUBMITS or (overdue and not lost)
                if not started and overdue and looked_lost is None:
                    looked_lost = time.monotonic()  # or its output is not in Flink's metrics yet: look again
                elif not started and overdue and looked_lost and time.monotonic() - looked_lost > METRICS_LAG_S:
                    # Beam 2.62's Flink runner could lose the first bundle of a job's first stage (the impulse
                    # reaches the SDK worker, its output never comes back: see finish_bundle_before_checkpointing
                    # in _submit, which avoids it; this stays as a safety net): nothing has been read yet,
                    # so the job is submitted again from where it was to start (a draining one too: it reads
                    # what its input holds, then ends). Seen twice, METRICS_LAG_S apart: resubmitted on a stale
                    # reading, a job that had written its output would write it again.
                    looked_lost = None
                    resubmits += 1
                    observer.log(
                        _warning(
                            f"Flink lost the first bundle of job {job.job_id} (Flink job {jid}): "
                            f"submitting it again (attempt {resubmits + 1})."
                        )
                    )
                    self.rest.cancel(jid)
                    self._wait_ended(jid)
                    jid = self.flink_job_id = self._submit(job, drain_file)
                    running_since = None
                    continue
            if self._drain.is_set() and not draining and state == "RUNNING":
                drain_file.parent.mkdir(parents=True, exist_ok=True)
                drain_file.touch()
                draining = True
                log.info("draining Flink job %s", jid)
            # A job whose first bundle may be lost has read nothing yet: it is not at its end.
            if draining and started and state == "RUNNING" and self.rest.at_end_of_time(jid):
                # Every window has fired. A job whose sources have ended may finish by itself; one that does not
                # (a source that never ends) is stopped with Flink's drain, which ends it only once every operator
                # has passed on what it holds: a window's output still on its way to a sink (WriteToBigQuery's
                # insert is stages after the window fires) is written, not lost, as with a savepoint and a cancel,
                # where the output Beam's operators buffer at a checkpoint never left. Nothing restarts from the
                # savepoint: it is not kept.
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > DRAIN_GRACE_S:
                    try:
                        flushed = self.rest.stop_draining(jid, self.config.shared_dir / "flush" / job.job_id)
                        shutil.rmtree(savepoint_path(flushed), ignore_errors=True)
                    except EngineError as exc:  # it finished meanwhile (the next poll sees it), or try again
                        log.info("stopping drained job %s: %s", jid, exc)
            time.sleep(POLL_S)

    def _report_metrics(self, jid: str, state: str | None, details: dict, observer: RunObserver, listed: dict) -> None:
        """The job's metrics so far to the observer, one REST call per vertex at most (two while a running vertex's
        metric names are listed). Those of a stage whose tasks ended come from the accumulator Beam's runner fills
        as its operator closes (FlinkRest.metric_results: exact, with the system metrics); those of a running stage
        from Flink's operator metrics (FlinkRest.live_metrics: live, up to metrics.fetcher.update-interval old).
        Once the job has ended, the accumulators alone: its final metrics."""
        from apache_beam.metrics import monitoring_infos
        from apache_beam.portability.api import beam_job_api_pb2

        vertices = details.get("vertices", [])
        active = state in _ACTIVE
        ended = [v["id"] for v in vertices if not active or v.get("status") in ("FINISHED", "CANCELED", "FAILED")]
        results = self.rest.metric_results(jid, ended) if ended else None
        handed = list(results.attempted) if results is not None else []
        live: list = []
        counts: dict[str, int] = {}
        reading = active and state == "RUNNING" and self._job_id is not None  # (restarting...: none now)
        if reading:
            running = [v["id"] for v in vertices if v.get("status") == "RUNNING"]
            exact = {metric_keys.key_of(info) for info in handed}  # (a metric of a stage that ended: not read live)
            keys_file = self.config.metric_keys_file(self._job_id or "")
            keys = {k for k in metric_keys.read_keys(keys_file) if k not in exact}
            try:
                live, counts = self.rest.live_metrics(jid, running, keys, listed, self._count_names, self._steps)
            except EngineError as exc:  # a slow JobManager: the last snapshot stands until the next reading
                log.info("no live metrics of Flink job %s: %s", jid, exc)
                return
        # The runner keeps attempted figures only: they stand for committed too. Its system metrics (element
        # counts per PCollection) come with the user metrics of the stages that ended, for getMetrics'
        # ElementCount; those of running stages from their Flink counters, where the ended ones have none.
        done = {info.labels.get(monitoring_infos.PCOLLECTION_LABEL) for info in handed}
        live_counts = [
            monitoring_infos.int64_counter(monitoring_infos.ELEMENT_COUNT_URN, count, pcollection=pcollection)
            for pcollection, count in counts.items()
            if pcollection not in done
        ]
        if handed or live_counts:
            observer.monitoring_infos(handed + live_counts)
        if active and not reading:
            return  # the user metrics' last snapshot stands
        if results is not None or live:
            results = beam_job_api_pb2.MetricResults(attempted=handed + live)
            observer.metrics(user_metrics(results, one_side="attempted"))

    def _wait_ended(self, jid: str, timeout: float = 30) -> None:
        # Still active at the deadline: the job is submitted again all the same.
        wait_until(lambda: self.rest.job(jid).get("state"), lambda state: state not in _ACTIVE, timeout, 0.2)

    @staticmethod
    def _report_stages(details: dict, seen: dict[str, str], observer: RunObserver) -> None:
        from beamport.engine.base import STAGE_DONE, STAGE_FAILED, STAGE_RUNNING

        states = {"RUNNING": STAGE_RUNNING, "FINISHED": STAGE_DONE, "FAILED": STAGE_FAILED}
        for vertex in details.get("vertices", []):
            state = states.get(vertex.get("status"))
            if state and seen.get(vertex["name"]) != state:
                seen[vertex["name"]] = state
                observer.stage_state(vertex["name"], state, int(time.time() * 1e6))


def _all_tasks_running(details: dict) -> bool:
    """Every task of the Flink job is deployed and running (or done): the job is doing its work."""
    return all(vertex.get("status") in ("RUNNING", "FINISHED") for vertex in details.get("vertices", []))


def rename_transforms(pipeline, names: dict) -> None:
    """Give renamed transforms (and what is inside them) their old names, in place: Flink finds an
    operator's state by its transforms' names, so a transform renamed in an update keeps its state."""
    from beamport.translate.compat import mapped_name

    if not names:
        return
    for transform in pipeline.components.transforms.values():
        transform.unique_name = mapped_name(transform.unique_name, names)
