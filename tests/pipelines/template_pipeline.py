"""A classic-template pipeline: its input, output and greeting are ValueProvider options, given at launch.

python template_pipeline.py --template_location PATH [pipeline flags...]   (writes the template)
"""

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


class GreetOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_value_provider_argument("--input", type=str)
        parser.add_value_provider_argument("--output", type=str)
        parser.add_value_provider_argument("--greeting", type=str, default="hello")


class Greet(beam.DoFn):
    def __init__(self, greeting):
        self.greeting = greeting

    def process(self, line):
        yield f"{self.greeting.get()} {line}"


if __name__ == "__main__":
    options = PipelineOptions(sys.argv[1:])
    greet = options.view_as(GreetOptions)
    p = beam.Pipeline(options=options)
    p | beam.io.ReadFromText(greet.input) | beam.ParDo(Greet(greet.greeting)) | beam.io.WriteToText(greet.output)
    p.run()
