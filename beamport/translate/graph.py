"""What JOB_VIEW_ALL shows of a job's graph, built from its Beam pipeline proto.

Beam 2.77 submits portable jobs with no `steps`: the graph travels only as the
staged pipeline proto (`pipelineUrl`). Dataflow still answers JOB_VIEW_ALL
with `steps` and a `pipelineDescription`, so Beamport derives both here:

- `pipelineDescription.originalPipelineTransform`: one TransformSummary per
  transform of the proto (composites included, so the UI-style hierarchy and
  every user-given name is there), `id` = the transform's key in
  `components.transforms`, `name` = its unique_name.
- `pipelineDescription.executionPipelineStage`: the fused stages, when the
  engine describes them (`StageDescription`, or FnApiRunner stages through
  `describe_fn_api_stages`).
- `pipelineDescription.displayData`: the pipeline options' display data, as
  the job body carries it in `environment.sdkPipelineOptions.display_data`.
- `steps`: one Step per executable (leaf) transform, in the legacy CloudWorkflow
  shape (`ParallelDo`, `GroupByKey`, ... with `user_name`, `output_info`,
  `parallel_input` ...). Step names are transform ids, as Dataflow uses for
  portable jobs: Beam's DataflowMetrics maps a metric's `step` back to a
  unique_name through `proto_pipeline.components.transforms[step]`, and its
  fallback reads `steps[].properties.user_name` for the same name.

Everything returned is Google JSON (camelCase) that parses as `dataflow.Job`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from google.protobuf.duration_pb2 import Duration

from beamport import wire

_P = common_urns.primitives
_COMBINE = common_urns.combine_components
_SDF = common_urns.sdf_components

# urn -> (TransformSummary.kind, legacy Step.kind). Urns not listed are
# UNKNOWN_KIND, and their leaf steps keep the urn as kind (honest, if unusual).
_KINDS = {
    _P.PAR_DO.urn: ("PAR_DO_KIND", "ParallelDo"),
    _P.GROUP_BY_KEY.urn: ("GROUP_BY_KEY_KIND", "GroupByKey"),
    _P.FLATTEN.urn: ("FLATTEN_KIND", "Flatten"),
    _P.IMPULSE.urn: ("READ_KIND", "ParallelRead"),
    _P.TEST_STREAM.urn: ("READ_KIND", "ParallelRead"),
    common_urns.deprecated_primitives.READ.urn: ("READ_KIND", "ParallelRead"),
    _P.ASSIGN_WINDOWS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _P.MAP_WINDOWS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _P.MERGE_WINDOWS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _COMBINE.COMBINE_PER_KEY_PRECOMBINE.urn: ("PAR_DO_KIND", "ParallelDo"),
    _COMBINE.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _COMBINE.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _COMBINE.COMBINE_PER_KEY_CONVERT_TO_ACCUMULATORS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _COMBINE.COMBINE_GROUPED_VALUES.urn: ("PAR_DO_KIND", "CombineValues"),
    _SDF.PAIR_WITH_RESTRICTION.urn: ("PAR_DO_KIND", "ParallelDo"),
    _SDF.SPLIT_AND_SIZE_RESTRICTIONS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _SDF.PROCESS_SIZED_ELEMENTS_AND_RESTRICTIONS.urn: ("PAR_DO_KIND", "ParallelDo"),
    _SDF.TRUNCATE_SIZED_RESTRICTION.urn: ("PAR_DO_KIND", "ParallelDo"),
    common_urns.composites.WRITE_FILES.urn: ("WRITE_KIND", "ParallelWrite"),
}
_LABELLED = common_urns.StandardDisplayData.DisplayData.LABELLED.urn
# FnApiRunner's data-channel transforms that stand for stage inputs/outputs.
_RUNNER_SOURCE = "beam:runner:source:v1"
_RUNNER_SINK = "beam:runner:sink:v1"


# -- shared look-ups over a pipeline proto (metrics.py uses them too) ----------


def is_synthetic_root(transform_id: str, transform: beam_runner_api_pb2.PTransform) -> bool:
    """The pipeline-wide root Beam adds (no urn, named by its own id): not a user transform."""
    return not transform.spec.urn and transform.unique_name in ("", transform_id)


def is_pass_through(transform: beam_runner_api_pb2.PTransform) -> bool:
    """A leaf composite that applied nothing (e.g. Side/MaybeReshuffle): its outputs are its inputs."""
    inputs = set(transform.inputs.values())
    return bool(transform.outputs) and all(pc in inputs for pc in transform.outputs.values())


def transform_ids_by_name(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, str]:
    """unique_name -> transform id. Leaves win a (malformed) tie: metrics come from leaves."""
    found: dict[str, str] = {}
    for tid, t in pipeline.components.transforms.items():
        if is_synthetic_root(tid, t):
            continue
        known = found.get(t.unique_name)
        if known is None or (pipeline.components.transforms[known].subtransforms and not t.subtransforms):
            found[t.unique_name] = tid
    return found


def producers(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, tuple[str, str]]:
    """pcollection id -> (transform id, output tag) of the innermost transform that makes it.

    Composites list their children's outputs as theirs; the leaf is the real producer.
    """
    best: dict[str, tuple[str, str]] = {}
    transforms = pipeline.components.transforms
    for tid, t in transforms.items():
        if is_synthetic_root(tid, t):
            continue
        inputs = set(t.inputs.values())
        for tag, pc in t.outputs.items():
            if pc in inputs:
                continue  # passes the collection through; does not make it
            known = best.get(pc)
            if known is None or _deeper(t, transforms[known[0]]):
                best[pc] = (tid, tag)
    return best


def _deeper(a: beam_runner_api_pb2.PTransform, b: beam_runner_api_pb2.PTransform) -> bool:
    if bool(a.subtransforms) != bool(b.subtransforms):
        return not a.subtransforms
    return a.unique_name.count("/") > b.unique_name.count("/")


def ordered_transform_ids(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Transform ids in application order (depth-first from the roots), then any unreachable ones."""
    transforms = pipeline.components.transforms
    seen: set[str] = set()
    order: list[str] = []

    def visit(tid: str) -> None:
        if tid in seen or tid not in transforms:
            return
        seen.add(tid)
        order.append(tid)
        for child in transforms[tid].subtransforms:
            visit(child)

    for root in pipeline.root_transform_ids:
        visit(root)
    for tid in sorted(transforms):
        visit(tid)
    return [tid for tid in order if not is_synthetic_root(tid, transforms[tid])]


def output_index(transform: beam_runner_api_pb2.PTransform, tag: str) -> int:
    """Position of an output among a transform's outputs: main output ("None") first, then by tag.

    Protobuf maps have no order, so this fixes one; it gives Dataflow's "-out0" for single outputs.
    """
    tags = sorted(transform.outputs, key=lambda t: (t != "None", t))
    return tags.index(tag)


# -- display data -----------------------------------------------------------


def _labelled_payloads(items: Iterable[beam_runner_api_pb2.DisplayData]):
    for item in items:
        if item.urn == _LABELLED:  # the only standard display-data urn
            yield beam_runner_api_pb2.LabelledPayload.FromString(item.payload)


def transform_display_data(transform: beam_runner_api_pb2.PTransform) -> list[dict]:
    """A transform's display data as Dataflow DisplayData (Google JSON)."""
    out = []
    for p in _labelled_payloads(transform.display_data):
        item = {"key": p.key or p.label, "namespace": p.namespace}
        if p.label:
            item["label"] = p.label
        which = p.WhichOneof("value")
        if which == "string_value":
            item["strValue"] = p.string_value
        elif which == "bool_value":
            item["boolValue"] = p.bool_value
        elif which == "int_value":
            item["int64Value"] = str(p.int_value)
        elif which == "double_value":
            item["floatValue"] = p.double_value
        out.append(item)
    return out


def _legacy_display_data(transform: beam_runner_api_pb2.PTransform) -> list[dict]:
    """Display data in the shape legacy steps carried (Beam's DisplayDataItem.get_dict())."""
    types = {"string_value": "STRING", "bool_value": "BOOLEAN", "int_value": "INTEGER", "double_value": "FLOAT"}
    out = []
    for p in _labelled_payloads(transform.display_data):
        which = p.WhichOneof("value")
        if which is None:
            continue
        value = getattr(p, which)
        if which == "int_value":
            value = str(value)  # a Struct would turn it into a double
        item = {"key": p.key or p.label, "namespace": p.namespace, "type": types[which], "value": value}
        if p.label:
            item["label"] = p.label
        out.append(item)
    return out


def pipeline_display_data(sdk_pipeline_options: Mapping | None) -> list[dict]:
    """Pipeline-level DisplayData from the job's `environment.sdkPipelineOptions`.

    Beam puts `DisplayData.create_from_options(options)` there as
    {"key", "namespace", "type", "value", ["shortValue", "label", "url"]};
    TIMESTAMP and DURATION values are milliseconds.
    """
    items = (sdk_pipeline_options or {}).get("display_data") or []
    out = []
    for raw in items:
        if not isinstance(raw, Mapping) or "key" not in raw:
            continue
        item: dict[str, Any] = {"key": str(raw["key"]), "namespace": str(raw.get("namespace", ""))}
        for src, dst in (("label", "label"), ("url", "url"), ("shortValue", "shortStrValue")):
            if raw.get(src) is not None:
                item[dst] = str(raw[src])
        value, kind = raw.get("value"), raw.get("type", "STRING")
        if value is None:
            continue
        if kind == "INTEGER":
            item["int64Value"] = str(int(value))
        elif kind == "FLOAT":
            item["floatValue"] = float(value)
        elif kind == "BOOLEAN":
            item["boolValue"] = bool(value)
        elif kind == "TIMESTAMP":
            item["timestampValue"] = wire.format_timestamp_us(int(float(value) * 1000))
        elif kind == "DURATION":
            item["durationValue"] = _duration_ms(float(value))
        elif kind == "JAVA_CLASS":
            item["javaClassValue"] = str(value)
        else:
            item["strValue"] = str(value)
        out.append(item)
    return out


def _duration_ms(ms: float) -> str:
    nanos = int(round(ms * 1_000_000))
    return Duration(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000).ToJsonString()


# -- pipelineDescription ----------------------------------------------------


def summary_kind(transform: beam_runner_api_pb2.PTransform) -> str:
    return _KINDS.get(transform.spec.urn, ("UNKNOWN_KIND", ""))[0]


def transform_summaries(pipeline: beam_runner_api_pb2.Pipeline) -> list[dict]:
    """originalPipelineTransform: every transform the user's pipeline has, composites too."""
    pcolls = pipeline.components.pcollections
    transforms = pipeline.components.transforms
    out = []
    for tid in ordered_transform_ids(pipeline):
        t = transforms[tid]
        summary: dict[str, Any] = {"id": tid, "name": t.unique_name}
        if summary_kind(t) != "UNKNOWN_KIND":  # the enum's default: Google JSON leaves it out
            summary["kind"] = summary_kind(t)
        display = transform_display_data(t)
        if display:
            summary["displayData"] = display
        tags = sorted(t.outputs, key=lambda tag: output_index(t, tag))
        outputs = [_pcoll_name(pcolls, t.outputs[tag]) for tag in tags]
        inputs = [_pcoll_name(pcolls, pc) for _, pc in sorted(t.inputs.items())]
        if outputs:
            summary["outputCollectionName"] = outputs
        if inputs:
            summary["inputCollectionName"] = inputs
        out.append(summary)
    return out


def _pcoll_name(pcolls, pc_id: str) -> str:
    """A collection's user name: "Work.None" for Beam Python's "4Work.None".

    Beam Python makes PCollection unique_names unique by prefixing the producer's
    label length; the prefix means nothing to a reader, so it goes when it checks out.
    """
    name = pcolls[pc_id].unique_name if pc_id in pcolls else ""
    if not name:
        return pc_id
    digits = len(name) - len(name.lstrip("0123456789"))
    if digits:
        rest = name[digits:]
        length = int(name[:digits])
        if length and rest[length : length + 1] == ".":
            return rest
    return name


@dataclass(frozen=True)
class StageDescription:
    """A fused stage as the engine runs it, in the pipeline proto's terms.

    name: the engine's name for the stage (shown as ExecutionStageSummary.name).
    transform_ids: keys of pipeline.components.transforms executed in the stage.
    inputs / outputs: pcollection ids the stage reads from / hands to other stages.
    prerequisites: names of the stages that must finish before this one runs.
    """

    name: str
    transform_ids: Sequence[str]
    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()
    prerequisites: Sequence[str] = ()


def execution_stages(pipeline: beam_runner_api_pb2.Pipeline, stages: Sequence[StageDescription]) -> list[dict]:
    """executionPipelineStage entries; ids are S01, S02... in the given order."""
    transforms = pipeline.components.transforms
    pcolls = pipeline.components.pcollections
    made_by = producers(pipeline)
    ids = {stage.name: f"S{i:02d}" for i, stage in enumerate(stages, start=1)}
    order = {tid: i for i, tid in enumerate(ordered_transform_ids(pipeline))}

    def source(pc: str) -> dict:
        # A collection is best known by the transform that makes it.
        user_name = _pcoll_name(pcolls, pc)
        origin = transforms[made_by[pc][0]].unique_name if pc in made_by else user_name
        return {"name": pc, "userName": user_name, "originalTransformOrCollection": origin}

    out = []
    for stage in stages:
        members = sorted({t for t in stage.transform_ids if t in transforms}, key=lambda t: order.get(t, 0))
        summary: dict = {"name": stage.name, "id": ids[stage.name]}
        kind = _stage_kind([transforms[t] for t in members])
        if kind != "UNKNOWN_KIND":
            summary["kind"] = kind
        if stage.inputs:
            summary["inputSource"] = [source(pc) for pc in dict.fromkeys(stage.inputs)]
        if stage.outputs:
            summary["outputSource"] = [source(pc) for pc in dict.fromkeys(stage.outputs)]
        prereqs = [ids[name] for name in dict.fromkeys(stage.prerequisites) if name in ids and name != stage.name]
        if prereqs:
            summary["prerequisiteStage"] = prereqs
        if members:
            summary["componentTransform"] = [
                {"name": t, "userName": transforms[t].unique_name, "originalTransform": transforms[t].unique_name}
                for t in members
            ]
        made_here = []
        for t in members:
            inputs = set(transforms[t].inputs.values())
            made_here += [pc for pc in transforms[t].outputs.values() if pc not in inputs]
        if made_here:
            summary["componentSource"] = [source(pc) for pc in dict.fromkeys(made_here)]
        out.append(summary)
    return out


def _stage_kind(members: list[beam_runner_api_pb2.PTransform]) -> str:
    """A stage is what it starts with: a read, a shuffle's read side, else a ParDo chain."""
    if not members:
        return "UNKNOWN_KIND"
    first = summary_kind(members[0])
    if first in ("READ_KIND", "GROUP_BY_KEY_KIND", "FLATTEN_KIND"):
        return first
    return "PAR_DO_KIND"


def readable_stage_names(stages) -> dict[str, str]:
    """Beam's fused stage names ("((ref_AppliedPTransform_Split_8)+(...))") -> Dataflow-style ones:
    the unique names of the stage's steps joined by "+" ("Split+PairWithOne+GroupAndSum/Precombine").
    The engine reports stages by these names, so the job graph names them the same way."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for stage in stages:
        name = "+".join(_steps_in_flow_order(stage)) or stage.name
        unique, n = name, 2
        while unique in taken:
            unique, n = f"{name} ({n})", n + 1
        taken.add(unique)
        names[stage.name] = unique
    return names


def _steps_in_flow_order(stage) -> list[str]:
    """The unique names of a stage's steps, producers before consumers, ties by name.

    FnApiRunner keeps a stage's transforms in an order that depends on set iteration (and so on
    PYTHONHASHSEED): the names must not, since the service and the engine compute them apart.
    """
    steps = [t for t in stage.transforms if t.spec.urn not in (_RUNNER_SOURCE, _RUNNER_SINK)]
    made_by = {pc: t.unique_name for t in steps for pc in t.outputs.values()}
    waits = {
        t.unique_name: {made_by[pc] for pc in t.inputs.values() if made_by.get(pc, t.unique_name) != t.unique_name}
        for t in steps
    }
    order: list[str] = []
    while waits:
        ready = sorted(name for name, deps in waits.items() if not deps) or sorted(waits)[:1]
        for name in ready:
            order.append(name)
            del waits[name]
        for deps in waits.values():
            deps.difference_update(ready)
    return order


def fused_stages(pipeline: beam_runner_api_pb2.Pipeline) -> list[StageDescription]:
    """The fused stages FnApiRunner (the embedded engine) will run the pipeline in."""
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    _, stages = FnApiRunner().create_stages(pipeline)
    return describe_fn_api_stages(stages, pipeline)


def describe_fn_api_stages(stages, pipeline: beam_runner_api_pb2.Pipeline) -> list[StageDescription]:
    """StageDescriptions from FnApiRunner's fused stages (`FnApiRunner().create_stages(proto)[1]`).

    FnApiRunner renames nothing it keeps, and names what it adds after the transform it
    comes from ("GroupByKey/Write", ".../CombinePerKey/Precombine"), so each stage
    transform maps to the proto transform whose unique_name is its longest prefix.
    Cross-stage data goes through its data-channel transforms: a sink's input is a
    stage output, a (non-impulse) source's output a stage input.
    """
    by_name = transform_ids_by_name(pipeline)
    pcolls = pipeline.components.pcollections
    readable = readable_stage_names(stages)
    names = {id(stage): readable[stage.name] for stage in stages}
    out = []
    for stage in stages:
        ids, inputs, outputs, made = [], [], [], set()
        for t in stage.transforms:
            tid = _original_transform_id(t.unique_name, by_name)
            if tid is not None:
                ids.append(tid)
            if t.spec.urn == _RUNNER_SINK:
                outputs += list(t.inputs.values())
            elif t.spec.urn == _RUNNER_SOURCE:
                if t.spec.payload != b"impulse":
                    inputs += list(t.outputs.values())
                made.update(t.outputs.values())
            else:
                made.update(t.outputs.values())
        for t in stage.transforms:  # side inputs: read here, made elsewhere
            if t.spec.urn not in (_RUNNER_SINK, _RUNNER_SOURCE):
                inputs += [pc for pc in t.inputs.values() if pc not in made]
        prereqs = [names[id(s)] for s in getattr(stage, "must_follow", ()) if id(s) in names]
        out.append(
            StageDescription(
                name=names[id(stage)],
                transform_ids=tuple(dict.fromkeys(ids)),
                inputs=tuple(pc for pc in dict.fromkeys(inputs) if pc in pcolls),
                outputs=tuple(pc for pc in dict.fromkeys(outputs) if pc in pcolls),
                prerequisites=tuple(prereqs),
            )
        )
    # Data dependencies FnApiRunner leaves implicit: who makes what a stage reads.
    made_in = {pc: s.name for s in out for pc in s.outputs}
    described = []
    for s in out:
        makers = [made_in[pc] for pc in s.inputs if made_in.get(pc, s.name) != s.name]
        prerequisites = tuple(dict.fromkeys([*s.prerequisites, *makers]))
        described.append(StageDescription(s.name, s.transform_ids, s.inputs, s.outputs, prerequisites))
    return described


def _original_transform_id(name: str, by_name: Mapping[str, str]) -> str | None:
    while name:
        if name in by_name:
            return by_name[name]
        name = name.rpartition("/")[0]
    return None


def pipeline_description(
    pipeline: beam_runner_api_pb2.Pipeline,
    stages: Sequence[StageDescription] | None = None,
    sdk_pipeline_options: Mapping | None = None,
) -> dict:
    """PipelineDescription (Google JSON)."""
    description: dict = {"originalPipelineTransform": transform_summaries(pipeline)}
    if stages:
        description["executionPipelineStage"] = execution_stages(pipeline, stages)
    display = pipeline_display_data(sdk_pipeline_options)
    if display:
        description["displayData"] = display
    return description


# -- steps --------------------------------------------------------------------


def _output_reference(made_by: Mapping[str, tuple[str, str]], pc: str) -> dict:
    step, tag = made_by.get(pc, (pc, ""))
    return {"@type": "OutputReference", "step_name": step, "output_name": tag}


def steps(pipeline: beam_runner_api_pb2.Pipeline) -> list[dict]:
    """Step per leaf transform: {kind, name: transform id, properties: {user_name, ...}}."""
    transforms = pipeline.components.transforms
    pcolls = pipeline.components.pcollections
    made_by = producers(pipeline)
    out = []
    for tid in ordered_transform_ids(pipeline):
        t = transforms[tid]
        if t.subtransforms or is_pass_through(t):
            continue
        kind = _KINDS.get(t.spec.urn, ("", t.spec.urn or "Unknown"))[1]
        props: dict = {"user_name": t.unique_name, "display_data": _legacy_display_data(t)}
        side_tags = set()
        if t.spec.urn == _P.PAR_DO.urn:
            side_tags = set(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).side_inputs)
        main = [tag for tag in sorted(t.inputs) if tag not in side_tags]
        if t.spec.urn == _P.FLATTEN.urn:
            props["inputs"] = [_output_reference(made_by, t.inputs[tag]) for tag in main]
        elif main:
            props["parallel_input"] = _output_reference(made_by, t.inputs[main[0]])
        if side_tags:
            props["non_parallel_inputs"] = {
                tag: _output_reference(made_by, t.inputs[tag]) for tag in sorted(side_tags) if tag in t.inputs
            }
        if t.spec.urn == _P.IMPULSE.urn:
            props["format"] = "impulse"  # what legacy Python jobs sent for Impulse
        outputs = sorted(t.outputs.items(), key=lambda kv: output_index(t, kv[0]))
        if outputs:
            props["output_info"] = [{"user_name": _pcoll_name(pcolls, pc), "output_name": tag} for tag, pc in outputs]
        out.append({"kind": kind, "name": tid, "properties": props})
    return out


def job_graph(
    pipeline: beam_runner_api_pb2.Pipeline,
    stages: Sequence[StageDescription] | None = None,
    sdk_pipeline_options: Mapping | None = None,
) -> dict:
    """The graph fields of a Job document: {"steps": [...], "pipelineDescription": {...}}."""
    return {
        "steps": steps(pipeline),
        "pipelineDescription": pipeline_description(pipeline, stages, sdk_pipeline_options),
    }
