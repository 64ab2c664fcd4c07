"""A pipeline whose first stage ends at once (10 elements, then a shuffle) and whose second naps for
SECONDS in all: while it runs, the first stage's element counts are already known.

    python shuffled_slow_pipeline.py SECONDS OUTPUT [pipeline flags...]   (prints JOB_ID <id>)
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
    p | beam.Create(list(range(10))) | beam.Reshuffle() | beam.Map(nap, seconds / 10) | beam.io.WriteToText(output)
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
