"""An unchanged batch pipeline, as a user writes it for Dataflow: lines `word,count` from text files (gs://...)
parsed into rows and written to a BigQuery table (created if needed) with WriteToBigQuery; --method names the
way (STREAMING_INSERTS or FILE_LOADS). Waits until the job ends."""

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

SCHEMA = "word:STRING,count:INTEGER"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--table", required=True)  # PROJECT:DATASET.TABLE
    parser.add_argument("--method", default="STREAMING_INSERTS")
    args, beam_args = parser.parse_known_args()
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        (
            p
            | "Read" >> beam.io.ReadFromText(args.input)
            | "Parse" >> beam.Map(lambda line: line.split(","))
            | "Row" >> beam.Map(lambda fields: {"word": fields[0], "count": int(fields[1])})
            | "Write"
            >> beam.io.WriteToBigQuery(
                args.table,
                schema=SCHEMA,
                method=args.method,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
            )
        )


if __name__ == "__main__":
    main()
