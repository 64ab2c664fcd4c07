"""Word count that naps on each line, so that a test can disturb its run; several output shards.

python slow_wordcount.py INPUT OUTPUT SECONDS_PER_LINE [pipeline flags...]   (prints JOB_ID <id>, or DONE)
"""

import re
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def nap(line, seconds):
    time.sleep(seconds)
    return line


if __name__ == "__main__":
    source, output, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    p = beam.Pipeline(options=PipelineOptions(sys.argv[4:]))
    (
        p
        | beam.io.ReadFromText(source)
        | beam.Map(nap, seconds)
        | beam.FlatMap(lambda line: re.findall(r"[a-z']+", line.lower()))
        | beam.combiners.Count.PerElement()
        | beam.MapTuple(lambda word, n: f"{word}: {n}")
        | beam.io.WriteToText(output, num_shards=3)
    )
    result = p.run()
    print("JOB_ID", getattr(result, "job_id", lambda: "local")(), flush=True)
