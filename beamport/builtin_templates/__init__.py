"""Beamport's built-in classic templates, in the spirit of Google's provided Dataflow templates, on files.

Each template is one module of this package. Run as a script with Beam's DataflowRunner and
`--template_location PATH`, it writes a classic template, which Beamport then launches with runtime
parameters. Every parameter is therefore a ValueProvider option, read only at run time. Next to the modules
is each template's metadata (`<Template_Name>_metadata.json`, Dataflow's classic metadata format), to copy
next to the template file as `PATH_metadata`.

This module imports nothing from Beam, so the service can list the templates cheaply.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Template name -> module name (in this package).
TEMPLATES = {
    "Word_Count": "word_count",
    "Text_Transform_Python_UDF": "python_udf_text",
    "Bulk_Compress_Files": "bulk_compress",
    "Bulk_Decompress_Files": "bulk_decompress",
    "CSV_to_JSONL": "csv_to_jsonl",
    "Cloud_PubSub_to_GCS_Text": "pubsub_to_text",
    "PubSub_to_BigQuery": "pubsub_to_bigquery",
    "PubSub_Subscription_to_BigQuery": "pubsub_subscription_to_bigquery",
    "GCS_Text_to_BigQuery": "text_to_bigquery",
    "SQL_Query": "sql_query",  # Beamport's SQL jobs (beamport sql query), not Google's
}
# The templates that Google provides under the same name and parameters (gs://dataflow-templates/latest/NAME,
# docs/templates.md): launching Google's path launches the built-in.
GOOGLE_PROVIDED = frozenset(
    {
        "Word_Count",
        "Bulk_Compress_Files",
        "Bulk_Decompress_Files",
        "Cloud_PubSub_to_GCS_Text",
        "PubSub_to_BigQuery",
        "PubSub_Subscription_to_BigQuery",
        "GCS_Text_to_BigQuery",
    }
)


def metadata_path(name: str) -> Path:
    """The metadata JSON file of the built-in template `name` (a key of TEMPLATES)."""
    if name not in TEMPLATES:
        raise KeyError(f"{name!r} is not a built-in template (one of {', '.join(sorted(TEMPLATES))}).")
    return Path(__file__).parent / f"{name}_metadata.json"


def add_parameters(parser, parameters: dict[str, dict]) -> None:
    """Declare a template's runtime parameters (name -> keyword arguments) as ValueProvider options.

    Beam parses the options of every PipelineOptions subclass in the process with one parser, and
    argparse refuses a name declared twice: a parameter that several template modules share
    (inputFilePattern, ...) is declared by whichever comes first, so shared names must be declared alike.
    """
    for name, kwargs in parameters.items():
        try:
            parser.add_value_provider_argument(f"--{name}", **kwargs)
        except argparse.ArgumentError:
            pass  # already declared by another template module imported in this process


def run_as_template(build, streaming: bool = False) -> None:
    """A template module's main: build the pipeline from the command line's options and run it (with
    --template_location, DataflowRunner only writes the template). A streaming template is written as a
    streaming job (its jobs run on the server's streaming engine)."""
    import sys

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(sys.argv[1:])
    if streaming:
        options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options)
    pipeline.run()
