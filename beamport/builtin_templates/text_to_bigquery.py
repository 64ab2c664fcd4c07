"""GCS_Text_to_BigQuery: text files to rows of a BigQuery table, as Google's template of that name
(TextIOToBigQuery) does.

Parameters (Google's names): inputFilePattern (gs:// or a local pattern), JSONPath (the table's schema: a JSON
file `{"BigQuery Schema": [{"name", "type", "mode"?, "fields"?}, ...]}`), outputTable (PROJECT:DATASET.TABLE,
made if missing, appended to), bigQueryLoadingTemporaryDirectory (checked as a place written; see below),
javascriptTextTransformGcsPath and javascriptTextTransformFunctionName (a JavaScript UDF that turns each line
into a JSON object's text, or drops it with null; javascript_udf.py). Without a UDF each line must itself be a
JSON object, which is what Google's template does with no UDF. A line that is not a JSON object (after the UDF)
fails the job, naming it, as Google's does.

Rows are written with streaming inserts, where Google's template runs load jobs from files in
bigQueryLoadingTemporaryDirectory: the same rows, without needing the table's files on Cloud Storage for the
BigQuery service to read (which the emulators and a local temporary directory could not give).
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.bigquery_tables import TableOf
from beamport.builtin_templates.files import ReadText, open_read
from beamport.builtin_templates.javascript_udf import UDF_PARAMETERS, JavascriptUdf, json_row

SCHEMA_KEY = "BigQuery Schema"


class TextToBigQueryOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputFilePattern": {"help": "The files to read (a file pattern)."},
                "JSONPath": {"help": 'The JSON file of the table\'s schema ({"BigQuery Schema": [...]}).'},
                "outputTable": {"help": "The BigQuery table to write (PROJECT:DATASET.TABLE)."},
                "bigQueryLoadingTemporaryDirectory": {"help": "Accepted: rows are written with streaming inserts."},
                **UDF_PARAMETERS,
            },
        )


def table_schema(text: str, where: str) -> dict:
    """Google's schema file -> WriteToBigQuery's schema ({"fields": [...]}), RECORD fields nested."""
    try:
        fields = json.loads(text)[SCHEMA_KEY]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Error parsing schema {where}: a JSON object with a {SCHEMA_KEY!r} list ({exc!r}).") from None

    def field(spec: dict) -> dict:
        out = {"name": spec["name"], "type": spec["type"]}
        if "mode" in spec:
            out["mode"] = spec["mode"]
        if spec["type"] in ("RECORD", "STRUCT"):
            out["fields"] = [field(nested) for nested in spec["fields"]]
        return out

    return {"fields": [field(spec) for spec in fields]}


class SchemaFromFile:
    """WriteToBigQuery's schema callable: JSONPath's file, read once where the pipeline runs."""

    def __init__(self, path):
        self.path = path
        self._schema = None

    def __call__(self, unused_destination) -> dict:
        if self._schema is None:
            path = self.path.get()
            with open_read(path) as handle:
                self._schema = table_schema(handle.read().decode("utf-8"), path)
        return self._schema


class LineToRow(beam.DoFn):
    def __init__(self, udf: JavascriptUdf):
        self.udf = udf

    def setup(self):
        self.transform = self.udf.load()

    def process(self, line: str):
        row = json_row(line, self.transform)
        if row is not None:  # None: the UDF dropped it
            yield row


def build(pipeline, options):
    params = options.view_as(TextToBigQueryOptions)
    udf = JavascriptUdf(params.javascriptTextTransformGcsPath, params.javascriptTextTransformFunctionName)
    return (
        pipeline
        | "Read from source" >> ReadText(params.inputFilePattern)
        | "TransformTextViaJavascript" >> beam.ParDo(LineToRow(udf))
        | "Insert into Bigquery"
        >> WriteToBigQuery(
            table=TableOf(params.outputTable),
            schema=SchemaFromFile(params.JSONPath),
            method=WriteToBigQuery.Method.STREAMING_INSERTS,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
        )
    )


if __name__ == "__main__":
    run_as_template(build)
