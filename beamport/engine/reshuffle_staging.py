"""Staging's workaround for Beam's reshuffle of windowed values, which no engine but FnApiRunner decodes.

Since Beam 2.64 (for pipelines built as 2.64 or later; 2.65 adds the pane), Python's ReshufflePerKey (and so
beam.Reshuffle, and WriteToBigQuery's CommitInsertIds) on a PCollection that is not globally windowed carries
each element's window, timestamp and pane inside its value through a globally windowed GroupByKey: the value's
coder is `beam:coder:windowed_value:v1` whose window coder is Python's pickled `_OrderedUnionCoder`
(transforms/util.py, `reify_metadata_custom_window`; coders.WindowedValueCoder). A runner knows the
windowed-value URN, so it decodes the value itself, length-prefixing the window coder it does not know, which
the SDK's bytes do not have: Prism's SDK harness fails to decode the grouped values ("IndexError: tuple index out
of range"), Flink reads the window as bytes ("ClassCastException: [B cannot be cast to BoundedWindow").

The rewrite wraps every such windowed-value coder where a coder or PCollection uses it in
`beam:coder:length_prefix:v1`: the engine moves the value as opaque bytes and only the SDK decodes it, with the
same coder as before. The elements, their windows, timestamps and panes are unchanged; only the bytes gain a
length prefix, written and read by the SDK alike (both sides read their coders from this proto).

The second rewrite, for engines that run Beam's reshuffle URN themselves (Flink: a rebalance), gives that URN
to Python's ReshufflePerKey composites (WriteToBigQuery's CommitInsertIds among them), which lack it: the engine
then moves their elements on as they are instead of through the globally windowed GroupByKey. That GroupByKey
dropped elements on Flink when a drain moved the watermark to the end of time: a drained window's sums reached
WriteToPubSub but not WriteToBigQuery, counted by Beam as `droppedDueToLateness` at CommitInsertIds/GroupByKey.
Only composites whose parts are exactly ReshufflePerKey's, and whose input and output have the same coder and
windowing, are renamed, so the engine's reshuffle hands the next transform what it expects.
"""

from __future__ import annotations

import re

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

WINDOWED_VALUE = common_urns.coders.WINDOWED_VALUE.urn
RESHUFFLE = common_urns.composites.RESHUFFLE.urn
GROUP_BY_KEY = common_urns.primitives.GROUP_BY_KEY.urn
# The parts of Python's ReshufflePerKey (apache_beam.transforms.util), by the end of their names.
_REIFY = re.compile(r"/Map\(reify_metadata_(default|custom)_window\)$")
_RESTORE = re.compile(r"/FlatMap\(restore_metadata_(default|custom)_window\)$")
LENGTH_PREFIX = common_urns.coders.LENGTH_PREFIX.urn
# The window coders every engine decodes itself.
MODEL_WINDOW_CODERS = {common_urns.coders.GLOBAL_WINDOW.urn, common_urns.coders.INTERVAL_WINDOW.urn}


def make_windowed_values_opaque(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Length-prefix, in place, the windowed values with a window coder engines do not know; return the ids of
    the coders now wrapped (none: the pipeline is unchanged)."""
    coders = pipeline.components.coders
    unknown_windows = sorted(
        coder_id
        for coder_id, coder in coders.items()
        if coder.spec.urn == WINDOWED_VALUE
        and len(coder.component_coder_ids) == 2
        and coders[coder.component_coder_ids[1]].spec.urn not in MODEL_WINDOW_CODERS
    )
    if not unknown_windows:
        return []
    opaque = {}
    for coder_id in unknown_windows:
        opaque_id = _unused_id(coders, f"{coder_id}_beamport_opaque")
        coders[opaque_id].CopyFrom(
            beam_runner_api_pb2.Coder(
                spec=beam_runner_api_pb2.FunctionSpec(urn=LENGTH_PREFIX), component_coder_ids=[coder_id]
            )
        )
        opaque[coder_id] = opaque_id
    for coder in coders.values():
        if coder.spec.urn != LENGTH_PREFIX:  # the new wrappers, and values some SDK already made opaque
            coder.component_coder_ids[:] = [opaque.get(c, c) for c in coder.component_coder_ids]
    for pcollection in pipeline.components.pcollections.values():
        pcollection.coder_id = opaque.get(pcollection.coder_id, pcollection.coder_id)
    return unknown_windows


def reshuffle_natively(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Give Python's ReshufflePerKey composites, in place, Beam's reshuffle URN; return their names."""
    transforms, pcollections = pipeline.components.transforms, pipeline.components.pcollections
    renamed = []
    for transform in transforms.values():
        if transform.spec.urn == RESHUFFLE or len(transform.subtransforms) != 3:
            continue
        reify, group, restore = (transforms[part] for part in transform.subtransforms)
        if not (
            _REIFY.search(reify.unique_name)
            and group.spec.urn == GROUP_BY_KEY
            and _RESTORE.search(restore.unique_name)
            and len(transform.inputs) == 1
            and len(transform.outputs) == 1
        ):
            continue
        (source,), (target,) = transform.inputs.values(), transform.outputs.values()
        before, after = pcollections[source], pcollections[target]
        if (before.coder_id, before.windowing_strategy_id) != (after.coder_id, after.windowing_strategy_id):
            continue
        transform.spec.CopyFrom(beam_runner_api_pb2.FunctionSpec(urn=RESHUFFLE))
        renamed.append(transform.unique_name)
    return renamed


def _unused_id(taken, wanted: str) -> str:
    candidate, number = wanted, 1
    while candidate in taken:
        number += 1
        candidate = f"{wanted}_{number}"
    return candidate
