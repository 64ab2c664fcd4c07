"""A flex template's program: plain options (not ValueProviders), read when the launcher runs it.

python flex_main.py --input IN --output OUT [--greeting WORD] [pipeline flags...]
"""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


class GreetOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", required=True)
        parser.add_argument("--output", required=True)
        parser.add_argument("--greeting", default="hello")


if __name__ == "__main__":
    options = PipelineOptions()
    greet = options.view_as(GreetOptions)
    p = beam.Pipeline(options=options)
    (
        p
        | beam.io.ReadFromText(greet.input)
        | beam.Map(lambda line, word: f"{word} {line}", greet.greeting)
        | beam.io.WriteToText(greet.output)
    )
    p.run()
