"""An unchanged batch pipeline, as a user writes it for Dataflow: a BigQuery table's rows read with
ReadFromBigQuery (--method: DIRECT_READ, the Storage Read API, or EXPORT, an extract job to files on GCS) and
written as `word,count` lines to text files. Waits until the job ends."""

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", required=True)  # PROJECT:DATASET.TABLE
    parser.add_argument("--method", default="DIRECT_READ")
    parser.add_argument("--output", required=True)
    args, beam_args = parser.parse_known_args()
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        (
            p
            | "Read" >> beam.io.ReadFromBigQuery(table=args.table, method=args.method)
            | "Format" >> beam.Map(lambda row: f"{row['word']},{row['count']}")
            | "Write" >> beam.io.WriteToText(args.output)
        )


if __name__ == "__main__":
    main()
