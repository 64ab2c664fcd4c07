"""A user's pipeline as the console shows it: its own options (--output, --seconds), a counter and a
distribution of its own, and a step that naps SECONDS in all, so that a test sees it run.

    python console_pipeline.py --output OUT --seconds SECONDS [pipeline flags...]   (prints JOB_ID <id>)
"""

import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions


class ConsoleOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--output", required=True, help="Where the numbers go.")
        parser.add_argument("--seconds", type=float, default=0.0, help="How long the naps last, in all.")


class Nap(beam.DoFn):
    def __init__(self, seconds):
        self.seconds = seconds
        self.naps = Metrics.counter("console", "naps")
        self.sizes = Metrics.distribution("console", "sizes")

    def process(self, element):
        time.sleep(self.seconds)
        self.naps.inc()
        self.sizes.update(element)
        yield element


if __name__ == "__main__":
    options = PipelineOptions()
    mine = options.view_as(ConsoleOptions)
    p = beam.Pipeline(options=options)
    (
        p
        | "Numbers" >> beam.Create(list(range(10)))
        | "Shuffle" >> beam.Reshuffle()
        | "Nap" >> beam.ParDo(Nap(mine.seconds / 10))
        | "Write" >> beam.io.WriteToText(mine.output)
    )
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
