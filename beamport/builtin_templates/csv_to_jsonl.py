"""CSV_to_JSONL: convert CSV files to JSON lines.

Parameters: inputFilePattern, outputPrefix, delimiter (one character, default ","), hasHeader ("true" or
"false", default "true"). With a header, each row becomes a JSON object keyed by the header's column
names; without, by col0, col1, ... Values stay strings. Each file is parsed whole, so every file of the
pattern can have its own header, and quoted fields may span lines. With a header, a row with another
number of fields is an error. Output lines are `json.dumps(row, sort_keys=True)`, in `.jsonl` files.
"""

from __future__ import annotations

import csv
import io
import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import WriteToText, open_read, spread_matches


class CsvToJsonlOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFilePattern": {"help": "The CSV files to read (a file pattern)."},
                "outputPrefix": {"help": "The prefix of the output files."},
                "delimiter": {"default": ",", "help": "The field delimiter (one character)."},
                "hasHeader": {"default": "true", "help": "Whether each file's first line is a header (true or false)."},
            },
        )


class CsvFileToJson(beam.DoFn):
    def __init__(self, delimiter, has_header):
        self.delimiter = delimiter  # ValueProviders: read in setup, at run time
        self.has_header = has_header

    def setup(self):
        self.sep = self.delimiter.get() or ","
        if len(self.sep) != 1:
            raise ValueError(f"delimiter must be one character, not {self.sep!r}.")
        header = (self.has_header.get() or "true").lower()
        if header not in ("true", "false"):
            raise ValueError(f"hasHeader must be true or false, not {self.has_header.get()!r}.")
        self.header = header == "true"

    def process(self, path):
        with open_read(path) as f:  # compression from the extension (AUTO): x.csv.gz works too
            text = f.read().decode("utf-8-sig")  # utf-8-sig: drop a byte order mark
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.sep)
        rows = (row for row in reader if row)  # skip blank lines
        names = next(rows, None) if self.header else None
        for row in rows:
            keys = names or [f"col{i}" for i in range(len(row))]
            if len(row) != len(keys):
                raise ValueError(f"{path}, line {reader.line_num}: {len(row)} fields, the header has {len(keys)}.")
            yield json.dumps(dict(zip(keys, row, strict=False)), sort_keys=True)


def build(pipeline, options):
    params = options.view_as(CsvToJsonlOptions)
    return (
        spread_matches(pipeline, params.inputFilePattern)
        | "ToJson" >> beam.ParDo(CsvFileToJson(params.delimiter, params.hasHeader))
        | "Write" >> WriteToText(params.outputPrefix, file_name_suffix=".jsonl")
    )


if __name__ == "__main__":
    run_as_template(build)
