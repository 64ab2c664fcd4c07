"""A pipeline whose one DoFn reports what it can see and do from where it runs (tests/test_sandbox.py).

python sandbox_probe.py OUTPUT PROBES_JSON [--allocate-gib N] DATAFLOW_FLAGS...
"""

import json
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def probe(_, paths: list[str], writes: list[str], allocate_gib: float) -> str:
    seen: dict = {"uid": os.getuid(), "environment": sorted(os.environ)}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                seen[path] = f"read {len(handle.read())} bytes"
        except OSError as exc:
            seen[path] = type(exc).__name__
    for path in writes:
        try:
            with open(path, "w") as handle:
                handle.write("written by user code")
            seen[path] = "written"
        except OSError as exc:
            seen[path] = type(exc).__name__
    seen["capabilities"] = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff"))
    seen["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
    if allocate_gib:
        hog = bytearray(int(allocate_gib * (1 << 30)))
        seen["allocated"] = len(hog)
    return json.dumps(seen)


if __name__ == "__main__":
    output, probes, *rest = sys.argv[1:]
    allocate = 0.0
    if rest[:1] == ["--allocate-gib"]:
        allocate, rest = float(rest[1]), rest[2:]
    spec = json.loads(probes)
    p = beam.Pipeline(options=PipelineOptions(rest))
    (
        p
        | beam.Create([None])
        | beam.Map(probe, spec["read"], spec["write"], allocate)
        | beam.io.WriteToText(output, shard_name_template="")
    )
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
    result.wait_until_finish()
