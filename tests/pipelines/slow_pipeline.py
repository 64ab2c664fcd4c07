"""A pipeline that takes SECONDS seconds (or, given a path, runs until that file exists: a test's release,
so that it never races the machine's speed), writing OUTPUT at the end; submitted without waiting.

    python slow_pipeline.py SECONDS|PATH OUTPUT [pipeline flags...]   (prints JOB_ID <id>)
"""

import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def nap(x, wait):
    if isinstance(wait, str):  # a release file, with a bound in case the test died
        deadline = time.monotonic() + 600
        while not os.path.exists(wait) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(wait)
    return x


if __name__ == "__main__":
    wait, output = sys.argv[1], sys.argv[2]
    seconds = wait if wait.startswith("/") else float(wait)
    p = beam.Pipeline(options=PipelineOptions(sys.argv[3:]))
    p | beam.Create([1]) | beam.Map(nap, seconds) | beam.io.WriteToText(output)
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
