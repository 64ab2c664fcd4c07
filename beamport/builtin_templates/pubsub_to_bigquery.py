"""PubSub_to_BigQuery: JSON messages from a Pub/Sub topic to rows of a BigQuery table, as Google's template of
that name (PubSubToBigQuery) does; PubSub_Subscription_to_BigQuery (pubsub_subscription_to_bigquery.py) is the
same from a subscription.

Parameters (Google's names): outputTableSpec (PROJECT:DATASET.TABLE, or DATASET.TABLE in the job's project:
bigquery_tables.py; it must exist), inputTopic (or inputSubscription), outputDeadletterTable (default:
outputTableSpec + "_error_records", made if missing),
javascriptTextTransformGcsPath, javascriptTextTransformFunctionName (an optional JavaScript UDF applied to each
message's data first; javascript_udf.py), javascriptTextTransformReloadIntervalMinutes (accepted).

Each message's data (UTF-8) is a JSON object whose fields are the table's columns, written with streaming
inserts (Beam's WriteToBigQuery, STREAMING_INSERTS, transient errors retried). A message the UDF fails on or
that is not a JSON object, and a row BigQuery refuses, becomes a row of the dead-letter table, in Google's
dead-letter schema: timestamp, payloadString, payloadBytes, attributes (key, value), errorMessage, stacktrace.
"""

from __future__ import annotations

import base64
import json
import traceback
from datetime import UTC, datetime

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.bigquery_tables import TableOf
from beamport.builtin_templates.javascript_udf import UDF_PARAMETERS, JavascriptUdf, json_row
from beamport.builtin_templates.pubsub_source import ReadPubSubParameters

FAILED = "failed"
DEADLETTER_SUFFIX = "_error_records"
DEADLETTER_SCHEMA = {
    "fields": [
        {"name": "timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
        {"name": "payloadString", "type": "STRING", "mode": "NULLABLE"},
        {"name": "payloadBytes", "type": "BYTES", "mode": "NULLABLE"},
        {
            "name": "attributes",
            "type": "RECORD",
            "mode": "REPEATED",
            "fields": [
                {"name": "key", "type": "STRING", "mode": "NULLABLE"},
                {"name": "value", "type": "STRING", "mode": "NULLABLE"},
            ],
        },
        {"name": "errorMessage", "type": "STRING", "mode": "NULLABLE"},
        {"name": "stacktrace", "type": "STRING", "mode": "NULLABLE"},
    ]
}


class PubSubToBigQueryOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "outputTableSpec": {"help": "The BigQuery table to write (PROJECT:DATASET.TABLE)."},
                "inputTopic": {"help": "The Pub/Sub topic to read (projects/PROJECT/topics/TOPIC)."},
                "inputSubscription": {"help": "The Pub/Sub subscription to read (projects/P/subscriptions/S)."},
                "outputDeadletterTable": {"help": "The BigQuery table of the messages that failed."},
                **UDF_PARAMETERS,
            },
        )


def deadletter_row(data: bytes, attributes: dict, error: str, stacktrace: str = "") -> dict:
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC"),
        "payloadString": data.decode("utf-8", errors="replace"),
        "payloadBytes": base64.b64encode(data).decode("ascii"),
        "attributes": [{"key": key, "value": value} for key, value in sorted(attributes.items())],
        "errorMessage": error,
        "stacktrace": stacktrace,
    }


class MessageToRow(beam.DoFn):
    """A serialized PubsubMessage -> its row (a dict), or its dead-letter row on the FAILED output."""

    def __init__(self, udf: JavascriptUdf):
        self.udf = udf

    def setup(self):
        self.transform = self.udf.load()

    def process(self, element: bytes):
        from google.pubsub_v1 import PubsubMessage

        message = PubsubMessage.deserialize(element)
        data, attributes = bytes(message.data), dict(message.attributes)
        try:
            row = json_row(data.decode("utf-8"), self.transform)
        except Exception as exc:
            yield beam.pvalue.TaggedOutput(FAILED, deadletter_row(data, attributes, str(exc), traceback.format_exc()))
            return
        if row is not None:  # None: the UDF dropped it
            yield row


def refused_row(failure) -> dict:
    """A row BigQuery refused (WriteToBigQuery's failed_rows_with_errors: table, row, errors) as a dead-letter
    row."""
    _, row, errors = failure
    return deadletter_row(json.dumps(row, sort_keys=True).encode(), {}, json.dumps(errors, default=str))


def build_from(pipeline, options, use_subscription: bool):
    params = options.view_as(PubSubToBigQueryOptions)
    read = (
        ReadPubSubParameters(subscription=params.inputSubscription, with_attributes=True)
        if use_subscription
        else ReadPubSubParameters(topic=params.inputTopic, with_attributes=True)
    )
    converted = (
        pipeline
        | ("ReadPubSubSubscription" if use_subscription else "ReadPubSubTopic") >> read
        | "ConvertMessageToTableRow"
        >> beam.ParDo(
            MessageToRow(
                JavascriptUdf(params.javascriptTextTransformGcsPath, params.javascriptTextTransformFunctionName)
            )
        ).with_outputs(FAILED, main="rows")
    )
    written = converted.rows | "WriteSuccessfulRecords" >> WriteToBigQuery(
        table=TableOf(params.outputTableSpec),
        method=WriteToBigQuery.Method.STREAMING_INSERTS,
        create_disposition=BigQueryDisposition.CREATE_NEVER,
        write_disposition=BigQueryDisposition.WRITE_APPEND,
        insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
    )
    refused = written.failed_rows_with_errors | "WrapInsertionErrors" >> beam.Map(refused_row)
    return (
        (converted[FAILED], refused)
        | "Flatten" >> beam.Flatten()
        | "WriteFailedRecords"
        >> WriteToBigQuery(
            # outputDeadletterTable, else Google's default: outputTableSpec + "_error_records".
            table=TableOf(params.outputDeadletterTable, params.outputTableSpec, DEADLETTER_SUFFIX),
            schema=DEADLETTER_SCHEMA,
            method=WriteToBigQuery.Method.STREAMING_INSERTS,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND,
        )
    )


def build(pipeline, options):
    return build_from(pipeline, options, use_subscription=False)


if __name__ == "__main__":
    run_as_template(build, streaming=True)
