"""Beam metric results -> Dataflow `MetricUpdate`s (Google JSON), and getMetrics' bookkeeping.

The target is what Beam's own reader, apache_beam.runners.dataflow.dataflow_metrics.
DataflowMetrics, makes of a JobMetrics: for every metric it must give back the
MetricResult that DirectRunner/FnApiRunner's `metrics().query()` gives. What that
reader requires, and so what is emitted (see docs/metrics-and-graph.md):

- user metrics have `name.origin == "user"` (_populate_metrics filters on it);
- `name.context["step"]` is the transform id, the key of
  `pipeline.components.transforms`: _translate_step_name turns it back into the
  unique_name through `job_graph.proto_pipeline.components.transforms[id]`;
- `name.context["namespace"]` is the metric's namespace (_get_metric_key);
- every metric comes twice, committed (no "tentative") and attempted
  (`context["tentative"] == "true"`): _populate_metrics indexes both without a
  default, so a metric missing either one raises KeyError in the reader;
- counters: `scalar` (a JSON number; proto-plus hands it over as a float, and the
  reader turns whole floats back into ints);
- distributions: no `scalar` (the reader tests scalar first) and `distribution`
  {count, min, max, sum} as numbers (the reader int()s each; Java casts to Number),
  plus `mean`, which the Dataflow service also sends;
- string sets: `set`, a list of strings (what Beam Java reads; Beam Python 2.77
  does not read it yet: TODO apache/beam#31788);
- gauges: `gauge` {value, timestamp} and no kind (a sampled value, not an
  aggregate); neither Beam SDK reads gauges back from Dataflow;
- bounded tries: `boundedTrie` in Dataflow's BoundedTrie shape, which is the shape
  of Beam's own BoundedTrie proto.

System metrics (per-PCollection ElementCount and MeanByteCount) cannot come from
`metrics().query()`: FnApiRunner's MetricResults are user metrics only, and its
`monitoring_metrics()` drops the PCOLLECTION label, merging every collection into
one key. They come from the raw monitoring infos instead: `system_metric_updates`
takes `RunnerResult.monitoring_infos()`.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

from apache_beam.metrics import monitoring_infos as mi
from apache_beam.metrics.cells import (
    BoundedTrieData,
    DistributionData,
    DistributionResult,
    GaugeData,
    GaugeResult,
)
from apache_beam.portability.api import beam_runner_api_pb2
from google.protobuf import json_format

from beamport import wire
from beamport.protocol import PUBSUB_SPLICE_NAMESPACE, SOURCE_LAG_GAUGE, STAGE_METRIC_CONTEXT
from beamport.translate import graph

log = logging.getLogger(__name__)

USER_ORIGIN = "user"
SYSTEM_ORIGIN = "dataflow/v1b3"  # the origin DataflowMetrics reads system metrics from
_RESERVED_CONTEXT = {"step", "namespace", "tentative"}


# -- user metrics -------------------------------------------------------------


def metric_updates(results, pipeline_proto: beam_runner_api_pb2.Pipeline, update_time_us: int) -> list[dict]:
    """MetricUpdates for Beam MetricResults.

    results: the dict `PipelineResult.metrics().query()` returns, or any iterable of
    MetricResult. pipeline_proto: the pipeline the job was submitted with (the one
    staged at pipelineUrl, which DataflowRunner also keeps as `job.proto_pipeline`).
    """
    step_ids = graph.transform_ids_by_name(pipeline_proto)
    transforms = pipeline_proto.components.transforms
    update_time = wire.format_timestamp_us(update_time_us)
    out: list[dict] = []
    for result in _flatten_results(results):
        sample = result.attempted if result.attempted is not None else result.committed
        if _value_fields(sample) is None:
            log.debug("metric %s has a value type Dataflow cannot carry: %r", result.key, sample)
            continue
        context = _user_context(result.key, step_ids, transforms)
        for tentative, value in ((False, result.committed), (True, result.attempted)):
            name_context = dict(context, tentative="true") if tentative else dict(context)
            update = {
                "name": {"origin": USER_ORIGIN, "name": result.key.metric.name, "context": name_context},
                "cumulative": True,
                "updateTime": update_time,
            }
            # A side Beam never filled (committed=None) stays valueless: the reader gives None back.
            if value is not None:
                update.update(_value_fields(value) or {})  # (its kind is one the sample above has)
            out.append(update)
    return out


def _flatten_results(results) -> Iterable:
    if isinstance(results, Mapping):
        for group in results.values():
            yield from group
    else:
        yield from results


# The transforms an engine expands a splittable DoFn into are named after it; a metric of one of them (a source's
# backlog gauges, a user counter in a splittable DoFn) is the splittable DoFn's. Prism: "e<id>_processandsplit"
# (and "_pwr", "_splitnsize"); Beam Java's expander (Flink): "<id>/ProcessSizedElementsAndRestrictions0";
# FnApiRunner: "<id or unique name>/Process".
_EXPANDED_SDF_STEP = re.compile(
    r"^e(?P<prism>.+)_(?:pwr|splitnsize|processandsplit|truncate)$"
    r"|^(?P<runner>.+)/(?:PairWithRestriction|SplitAndSizeRestriction|TruncateAndSizeRestriction"
    r"|ProcessSizedElementsAndRestrictions|ProcessElementAndRestrictionWithSizing|Process)\d*$"
)


def _step_id(step: str | None, step_ids: Mapping[str, str], transforms) -> str | None:
    """The transform id for a MetricResult's step.

    The Python SDK harness labels user metrics with the transform's unique_name (its
    NameContext), other SDKs with the transform id; both are accepted, and so is the name
    of a transform an engine expanded a splittable DoFn into (_EXPANDED_SDF_STEP). A name
    the proto does not know is kept as is: the reader fails to translate it and then
    reports it unchanged, which is what DirectRunner reports too.
    """
    if not step:
        return None
    if step in transforms:
        return step
    if step in step_ids:
        return step_ids[step]
    expanded = _EXPANDED_SDF_STEP.match(step)
    if expanded:
        original = expanded.group("prism") or expanded.group("runner")
        if original in transforms:
            return original
        if original in step_ids:
            return step_ids[original]
    return step


def _user_context(key, step_ids, transforms) -> dict:
    context = {}
    step = _step_id(key.step, step_ids, transforms)
    if step is not None:
        context["step"] = step
    context["namespace"] = key.metric.namespace
    for label, value in (key.labels or {}).items():
        if label not in _RESERVED_CONTEXT:  # DataflowMetrics copies back only a few known labels
            context[str(label)] = str(value)
    return context


def _value_fields(value) -> dict | None:
    """The kind and value fields of a MetricUpdate for one Beam metric value, or None if it has none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Number):
        return {"kind": "Sum", "scalar": value}
    if isinstance(value, DistributionResult):
        value = value.data
    if isinstance(value, DistributionData):
        dist: dict[str, float] = {"count": value.count, "min": value.min, "max": value.max, "sum": value.sum}
        if value.count:
            dist["mean"] = value.sum / value.count
        return {"kind": "Distribution", "distribution": dist}
    if isinstance(value, (set, frozenset)):
        return {"kind": "Set", "set": sorted(str(v) for v in value)}
    if isinstance(value, GaugeResult):
        value = value.data
    if isinstance(value, GaugeData):
        stamp = wire.format_timestamp_us(int(value.timestamp * 1_000_000))  # Beam keeps seconds
        return {"gauge": {"value": value.value, "timestamp": stamp}}
    if isinstance(value, BoundedTrieData):  # query() hands bounded tries over as BoundedTrieData
        return {"kind": "Trie", "boundedTrie": json_format.MessageToDict(value.to_proto())}
    return None


# -- system metrics -------------------------------------------------------------


def system_metric_updates(
    monitoring_infos: Iterable, pipeline_proto: beam_runner_api_pb2.Pipeline, update_time_us: int
) -> list[dict]:
    """ElementCount and MeanByteCount per PCollection, from FnApiRunner monitoring infos.

    monitoring_infos: `RunnerResult.monitoring_infos()` (FnApiRunner aggregates each
    stage's bundles, and a collection is counted in one stage only, so counts here are
    summed). Collections the proto does not know (runner-internal ones) are skipped.

    Names follow what the Dataflow service answers for Beam Python portable jobs:
    origin "dataflow/v1b3", context {"original_name": "<producer>-out0-ElementCount",
    "output_user_name": "<producer>-out0"}, no step. DataflowMetrics.all_metrics()
    turns these into MetricKey(step="", MetricName("dataflow/v1b3", "ElementCount"),
    labels={original_name, output_user_name}).
    """
    pcolls = pipeline_proto.components.pcollections
    counts: dict[str, int] = defaultdict(int)
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [count, sum]
    for info in monitoring_infos:
        pc = info.labels.get(mi.PCOLLECTION_LABEL)
        if pc is None or pc not in pcolls:
            continue
        if info.urn == mi.ELEMENT_COUNT_URN:
            counts[pc] += mi.extract_counter_value(info)
        elif info.urn == mi.SAMPLED_BYTE_SIZE_URN:
            count, total, _, _ = mi.extract_distribution(info)
            sizes[pc][0] += count
            sizes[pc][1] += total
    update_time = wire.format_timestamp_us(update_time_us)
    made_by = graph.producers(pipeline_proto)
    transforms = pipeline_proto.components.transforms
    out: list[dict] = []
    for pc in sorted(set(counts) | set(sizes)):
        user_name = _output_user_name(pc, made_by, transforms, pcolls)
        if pc in counts:
            out += _system_pair("ElementCount", user_name, {"kind": "Sum", "scalar": counts[pc]}, update_time)
        count, total = sizes.get(pc, (0, 0))
        if count:
            # Dataflow answers MeanByteCount as a whole-number scalar (what Beam reads);
            # meanSum/meanCount are the documented fields of the "Mean" kind.
            mean = {"kind": "Mean", "scalar": round(total / count), "meanSum": total, "meanCount": count}
            out += _system_pair("MeanByteCount", user_name, mean, update_time)
    return out


def _output_user_name(pc: str, made_by, transforms, pcolls) -> str:
    """'<producing transform's unique_name>-out<i>', Dataflow's name for a step output."""
    if pc in made_by:
        tid, tag = made_by[pc]
        return f"{transforms[tid].unique_name}-out{graph.output_index(transforms[tid], tag)}"
    return pcolls[pc].unique_name or pc


def _system_pair(name: str, output_user_name: str, value: dict, update_time: str) -> list[dict]:
    context = {"original_name": f"{output_user_name}-{name}", "output_user_name": output_user_name}
    return [
        {
            "name": {"origin": SYSTEM_ORIGIN, "name": name, "context": dict(context, **extra)},
            "cumulative": True,
            **value,
            "updateTime": update_time,
        }
        for extra in ({}, {"tentative": "true"})
    ]


# -- a source's backlog ----------------------------------------------------------------------------------

# The gauges Beam names for a source's backlog (Java's org.apache.beam.sdk.metrics.SourceMetrics; Beamport's
# ReadFromLocalLog sets them too): the source's, or its splits' ("source.splits", "backlog_bytes.<split id>").
SOURCE_NAMESPACE = "source"
SOURCE_SPLITS_NAMESPACE = "source.splits"
BACKLOG_GAUGES = {"backlog_bytes": "BacklogBytes", "backlog_elements": "BacklogElements"}


def backlog_metric_updates(results, pipeline_proto: beam_runner_api_pb2.Pipeline, update_time_us: int) -> list[dict]:
    """Each source's backlog, from its backlog gauges in Beam MetricResults (as `metric_updates` takes them):
    `BacklogBytes` and `BacklogElements`, origin "dataflow/v1b3", context {"step": the source's transform id},
    kind LatestValue (what the source last said), the committed and tentative twins Beam's reader needs. A
    source that gives only its splits' backlogs has their sum. Not cumulative: a backlog goes down."""
    transforms = pipeline_proto.components.transforms
    parents = {sub: tid for tid, t in transforms.items() for sub in t.subtransforms}
    whole: dict[tuple[str, str], int] = {}  # (step, gauge name) -> value
    splits: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)  # ... -> {split id: value}
    for step, namespace, name, value in _gauges(results, pipeline_proto):
        # Beamport's Pub/Sub read reports from inside the transforms staging put in place of Beam's native read:
        # the backlog is the native read's, the source step the user's pipeline has.
        while step.startswith(PUBSUB_SPLICE_NAMESPACE) and step in parents:
            step = parents[step]
        if namespace == SOURCE_NAMESPACE and name in BACKLOG_GAUGES:
            whole[step, name] = value
        elif namespace == SOURCE_SPLITS_NAMESPACE and name.split(".", 1)[0] in BACKLOG_GAUGES and "." in name:
            gauge_name, split = name.split(".", 1)
            splits[step, gauge_name][split] = value
    figures = dict(whole)
    for key, by_split in splits.items():
        figures.setdefault(key, sum(by_split.values()))
    update_time = wire.format_timestamp_us(update_time_us)
    out: list[dict] = []
    for (step, name), value in sorted(figures.items()):
        for extra in ({}, {"tentative": "true"}):
            out.append(
                {
                    "name": {"origin": SYSTEM_ORIGIN, "name": BACKLOG_GAUGES[name], "context": {"step": step, **extra}},
                    "kind": "LatestValue",
                    "cumulative": False,
                    "scalar": value,
                    "updateTime": update_time,
                }
            )
    return out


def _gauges(results, pipeline_proto: beam_runner_api_pb2.Pipeline) -> Iterable[tuple[str, str, str, int]]:
    """The gauges among Beam MetricResults, as (the transform id of their step, namespace, name, value)."""
    step_ids = graph.transform_ids_by_name(pipeline_proto)
    transforms = pipeline_proto.components.transforms
    for result in _flatten_results(results):
        gauge = result.attempted if result.attempted is not None else result.committed
        if isinstance(gauge, GaugeResult):
            gauge = gauge.data
        step = _step_id(result.key.step, step_ids, transforms)
        if isinstance(gauge, GaugeData) and gauge.value is not None and step is not None:
            yield step, result.key.metric.namespace, result.key.metric.name, gauge.value


def stage_source_lags(figures: Mapping, results, pipeline_proto: beam_runner_api_pb2.Pipeline) -> dict[str, float]:
    """The lag of each stage (by name) that runs a step whose source reports one (its protocol.SOURCE_LAG_GAUGE:
    how long its oldest element not yet committed has waited, in ms), as far as the engine said which steps a stage
    runs (StageFigures.transforms): the largest of its sources' lags, in seconds."""
    lags = {
        step: round(value / 1000, 3)
        for step, namespace, name, value in (_gauges(results, pipeline_proto) if results is not None else ())
        if namespace == SOURCE_NAMESPACE and name == SOURCE_LAG_GAUGE
    }
    if not lags:
        return {}
    step_ids = graph.transform_ids_by_name(pipeline_proto)
    transforms = pipeline_proto.components.transforms
    by_stage = {}
    for stage, figure in figures.items():
        steps = {_step_id(t, step_ids, transforms) for t in figure.transforms}
        if found := [lag for step, lag in lags.items() if step in steps]:
            by_stage[stage] = max(found)
    return by_stage


# -- a streaming run's stage figures --------------------------------------------------------------


def stage_metric_updates(
    figures: Mapping, update_time_us: int, source_lags_by_stage: Mapping[str, float] | None = None
) -> list[dict]:
    """MetricUpdates for an engine's StageFigures (beamport.engine.base), by stage name: each figure the engine
    gave, under origin "dataflow/v1b3" and context {"execution_stage": stage}. What each name means is in
    docs/engines.md ("Streaming signals"):

    - DataWatermark: the stage's output watermark, µs since the epoch (kind Min: a watermark of several
      workers is their least);
    - DataWatermarkAge: how far that watermark was behind the clock when measured, in seconds (Dataflow's
      data freshness of the stage);
    - SystemLag: how far the stage's output watermark was behind its input watermark, in seconds: the event
      time its work in flight holds back (only where the stage has both); for a stage that reads a source that
      tells its lag (`source_lags_by_stage`, from `stage_source_lags`), how long its oldest element not yet
      committed has waited, if longer;
    - ElementsIn, ElementsOut: elements the stage took in and passed on so far (Sum, cumulative);
    - ElementsOutPerSecond: the rate it passes them on at, as the engine measured it.
    """
    update_time = wire.format_timestamp_us(update_time_us)
    out: list[dict] = []
    for stage, figure in sorted(figures.items()):
        values: list[tuple[str, str, float | int, bool]] = []
        lags = [lag] if (lag := (source_lags_by_stage or {}).get(stage)) is not None else []
        if figure.output_watermark_us is not None:
            values.append(("DataWatermark", "Min", figure.output_watermark_us, False))
            values.append(
                ("DataWatermarkAge", "Max", round((figure.measured_us - figure.output_watermark_us) / 1e6, 3), False)
            )
            if figure.input_watermark_us is not None:
                lags.append(round(max(0, figure.input_watermark_us - figure.output_watermark_us) / 1e6, 3))
        if lags:
            values.append(("SystemLag", "Max", max(lags), False))
        for name, value in (("ElementsIn", figure.elements_in), ("ElementsOut", figure.elements_out)):
            if value is not None:
                values.append((name, "Sum", value, True))
        if figure.elements_out_per_s is not None:
            values.append(("ElementsOutPerSecond", "Sum", round(figure.elements_out_per_s, 3), False))
        for name, kind, value, cumulative in values:
            out.append(
                {
                    "name": {"origin": SYSTEM_ORIGIN, "name": name, "context": {STAGE_METRIC_CONTEXT: stage}},
                    "kind": kind,
                    "cumulative": cumulative,
                    "scalar": value,
                    "updateTime": update_time,
                }
            )
    return out
