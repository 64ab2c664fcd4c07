"""Whether a new pipeline can take over the state of a running one (Dataflow's update compatibility check).

State belongs to transforms, by name: a stateful ParDo's state cells and timers, a splittable DoFn's
positions (what a source has read), a GroupByKey's open windows. A new pipeline can carry the running
one's state on if each of those transforms is still there under the same name (or the name
`transformNameMapping` maps it to), and each state cell keeps its coder.
"""

from __future__ import annotations

from collections.abc import Mapping

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

_PARDO = common_urns.primitives.PAR_DO.urn
_GBK = common_urns.primitives.GROUP_BY_KEY.urn


def mapped_name(name: str, mapping: Mapping[str, str]) -> str:
    """A transform's name in the new pipeline: `mapping` renames a transform and everything inside it."""
    for old, new in mapping.items():
        if name == old or name.startswith(old + "/"):
            return new + name[len(old) :]
    return name


def _coder_shape(pipeline: beam_runner_api_pb2.Pipeline, coder_id: str) -> tuple:
    coder = pipeline.components.coders.get(coder_id)
    if coder is None:
        return ()
    return (coder.spec.urn, tuple(_coder_shape(pipeline, c) for c in coder.component_coder_ids))


def stateful_transforms(pipeline: beam_runner_api_pb2.Pipeline) -> dict[str, dict[str, tuple]]:
    """Leaf transforms that hold state, by unique name: {state or timer id: the shape of its coder}."""
    found: dict[str, dict[str, tuple]] = {}
    for transform in pipeline.components.transforms.values():
        if transform.subtransforms:
            continue
        if transform.spec.urn == _GBK:
            found[transform.unique_name] = {}
        elif transform.spec.urn == _PARDO:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            cells: dict[str, tuple] = {}
            for state_id, spec in payload.state_specs.items():
                kind = spec.WhichOneof("spec") or ""
                detail = getattr(spec, kind) if kind else None
                coders = (
                    [
                        _coder_shape(pipeline, value)
                        for field, value in detail.ListFields()
                        if field.name.endswith("coder_id")
                    ]
                    if detail is not None
                    else []
                )
                cells[f"state '{state_id}'"] = (kind, tuple(coders))
            for timer_id in payload.timer_family_specs:
                cells[f"timer '{timer_id}'"] = ("timer",)
            if payload.restriction_coder_id:
                cells["read position (restriction)"] = (
                    "restriction",
                    _coder_shape(pipeline, payload.restriction_coder_id),
                )
            if cells:
                found[transform.unique_name] = cells
    return found


def incompatibilities(
    old: beam_runner_api_pb2.Pipeline, new: beam_runner_api_pb2.Pipeline, mapping: Mapping[str, str]
) -> list[str]:
    """Why the new pipeline cannot carry the old one's state on: one sentence per transform; [] if it can."""
    now = stateful_transforms(new)
    problems = []
    for name, cells in sorted(stateful_transforms(old).items()):
        target = mapped_name(name, mapping)
        renamed = f" (mapped to '{target}')" if target != name else ""
        if target not in now:
            problems.append(
                f"transform '{name}'{renamed} holds state in the running job and is missing from the new pipeline"
                + (
                    ""
                    if renamed
                    else "; if it was renamed, map it with transformNameMapping (--transform_name_mapping)"
                )
            )
            continue
        for cell, shape in sorted(cells.items()):
            if cell not in now[target]:
                problems.append(f"transform '{name}'{renamed} no longer has its {cell}")
            elif now[target][cell] != shape:
                problems.append(f"the coder of {cell} of transform '{name}'{renamed} changed")
    return problems
