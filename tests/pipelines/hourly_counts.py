"""A streaming pipeline with options only (as Airflow's BeamRunPythonPipelineOperator passes them): elements per key
and one-hour event-time window over a local log (beamport.io.ReadFromLocalLog; a line is KEY,EPOCH_SECONDS),
each window's count appended to --out as KEY,N when the window closes (a drain closes it).

python hourly_counts.py --log LOG --out OUT [DataflowRunner flags...] --streaming
"""

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.io import ReadFromLocalLog


class CountOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--log", required=True)
        parser.add_argument("--out", required=True)


class AppendTo(beam.DoFn):
    def __init__(self, path):
        self.path = path

    def process(self, text):
        with open(self.path, "a") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    # Logs at INFO: Airflow learns the job's id from DataflowRunner's INFO line "Created job with id: [ID]"
    # (without it, its Beam operators follow the job by name and return no id for DataflowStopJobOperator).
    logging.basicConfig(level=logging.INFO)
    options = PipelineOptions()
    paths = options.view_as(CountOptions)
    p = beam.Pipeline(options=options)
    (
        p
        | "Read" >> ReadFromLocalLog(paths.log, timestamp_fn=lambda line: float(line.split(",")[1]))
        | "Window" >> beam.WindowInto(beam.window.FixedWindows(3600))
        | "Key" >> beam.Map(lambda line: (line.split(",")[0], 1))
        | "Sum" >> beam.CombinePerKey(sum)
        | "Format" >> beam.MapTuple(lambda key, n: f"{key},{n}")
        | "Write" >> beam.ParDo(AppendTo(paths.out))
    )
    p.run()
