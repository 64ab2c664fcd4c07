"""A pipeline with a big shuffle in the middle (about 4 MB grouped), so that autoscaling has a backlog to
act on: 8 keys, 2,500 values each; writes "key: count" lines.

    python scaling_pipeline.py OUTPUT [pipeline flags...]   (prints JOB_ID <id>)
"""

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def spread(i):
    for j in range(500):
        yield i % 8, "x" * 200 + str(j)


if __name__ == "__main__":
    output = sys.argv[1]
    p = beam.Pipeline(options=PipelineOptions(sys.argv[2:]))
    (
        p
        | beam.Create(list(range(40)))
        | beam.FlatMap(spread)
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: f"{key}: {len(list(values))}")
        | beam.io.WriteToText(output)
    )
    result = p.run()
    print("JOB_ID", getattr(result, "job_id", lambda: "local")(), flush=True)
