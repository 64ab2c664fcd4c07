"""A pipeline that takes SECONDS seconds, writing OUTPUT at the end; submitted without waiting.

    python slow_pipeline.py SECONDS OUTPUT [pipeline flags...]   (prints JOB_ID <id>)
"""

import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def nap(x, seconds):
    time.sleep(seconds)
    return x


if __name__ == "__main__":
    seconds, output = float(sys.argv[1]), sys.argv[2]
    p = beam.Pipeline(options=PipelineOptions(sys.argv[3:]))
    p | beam.Create([1]) | beam.Map(nap, seconds) | beam.io.WriteToText(output)
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
