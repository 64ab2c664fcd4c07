"""Word_Count: count the words of text files.

Parameters: inputFile (a file pattern), output (the output prefix). Words are runs of `[\\w']` with their
case kept, as in Beam's and Google's word count ("The" and "the" are two words). Output lines are
`word: count`.
"""

from __future__ import annotations

import re

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import ReadText, WriteToText


class WordCountOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFile": {"help": "The files to read (a file pattern)."},
                "output": {"help": "The prefix of the output files."},
            },
        )


def words(line: str) -> list[str]:
    return re.findall(r"[\w']+", line)


def format_count(word: str, count: int) -> str:
    return f"{word}: {count}"


def build(pipeline, options):
    params = options.view_as(WordCountOptions)
    # ReadText and WriteToText take the ValueProviders and read them at run time, and open files through the
    # worker's file policy (builtin_templates/files.py).
    return (
        pipeline
        | "Read" >> ReadText(params.inputFile)
        | "Words" >> beam.FlatMap(words)
        | "Count" >> beam.combiners.Count.PerElement()
        | "Format" >> beam.MapTuple(format_count)
        | "Write" >> WriteToText(params.output)
    )


if __name__ == "__main__":
    run_as_template(build)
