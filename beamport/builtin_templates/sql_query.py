"""SQL_Query: run a GoogleSQL query over catalog tables and write its result (Dataflow SQL's jobs).

Parameters: query (GoogleSQL), tables (JSON: {name: {path, format}}, what the service resolves from its
catalog), outputPrefix, outputFormat (jsonl or csv). The query runs inside the pipeline on DuckDB
(sql_engine.py); the rows are written as JSON lines (keys sorted) or CSV lines (no header). Each table's
files are matched in the worker through its file policy (builtin_templates/files.py), and DuckDB may open
those files only.
"""

from __future__ import annotations

import csv
import io
import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import WriteToText, match


class SqlQueryOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "query": {"help": "The GoogleSQL query."},
                "tables": {"help": "The tables it reads: JSON {name: {path, format}}."},
                "outputPrefix": {"help": "The prefix of the output files."},
                "outputFormat": {"default": "jsonl", "help": "jsonl or csv."},
            },
        )


class RunQuery(beam.DoFn):
    def __init__(self, query, tables, output_format):
        self.query, self.tables, self.output_format = query, tables, output_format  # read at run time

    def process(self, _):
        from beamport.builtin_templates import sql_engine

        as_csv = (self.output_format.get() or "jsonl") == "csv"
        tables = {}
        for name, table in json.loads(self.tables.get() or "{}").items():
            files = match(table["path"])
            if not files:
                raise FileNotFoundError(f"No file matches {table['path']!r} (the table {name}).")
            tables[name] = {"path": files, "format": table["format"]}
        for row in sql_engine.run(self.query.get(), tables):
            if as_csv:
                line = io.StringIO()
                csv.writer(line, lineterminator="").writerow(["" if v is None else v for v in row.values()])
                yield line.getvalue()
            else:
                yield json.dumps(row, sort_keys=True, default=str)


def build(pipeline, options):
    params = options.view_as(SqlQueryOptions)
    return (
        pipeline
        | "Start" >> beam.Create([None])
        | "Query" >> beam.ParDo(RunQuery(params.query, params.tables, params.outputFormat))
        | "Write" >> WriteToText(params.outputPrefix)
    )


if __name__ == "__main__":
    run_as_template(build)
