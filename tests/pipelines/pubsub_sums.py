"""An unchanged streaming Pub/Sub pipeline, as a user writes it for Dataflow: messages `key,number` with their
event time in the `ts` attribute and their id in `id`, summed per key in one-minute windows, each sum
published to the output topic as `key,sum,window start`. With --input_topic instead: a topic read with
attributes, each message echoed upper-cased with its attribute `k`. With --reshuffle: Reshuffle and ReshufflePerKey
between the windowing and the sum, as WriteToBigQuery's CommitInsertIds has (docs/engines.md, "Beam's reshuffle of
windowed values"). With --bigquery TABLE: each sum also written to that BigQuery table (created if needed) by
WriteToBigQuery's streaming inserts, as a row (key, sum, window_start). Prints JOB_ID <id> once submitted."""

import argparse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.util import ReshufflePerKey

SCHEMA = "key:STRING,sum:INTEGER,window_start:INTEGER"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input_subscription")
    parser.add_argument("--input_topic")  # instead: messages with attributes, echoed upper-cased
    parser.add_argument("--output_topic", required=True)
    parser.add_argument("--reshuffle", action="store_true")
    parser.add_argument("--bigquery")  # PROJECT:DATASET.TABLE: the sums written there too
    args, beam_args = parser.parse_known_args()
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    if args.input_topic:
        (
            p
            | "Read" >> beam.io.ReadFromPubSub(topic=args.input_topic, with_attributes=True)
            | "Echo"
            >> beam.Map(
                lambda m: beam.io.PubsubMessage(m.data.upper(), {"k": m.attributes.get("k", ""), "echo": "yes"})
            )
            | "Write" >> beam.io.WriteToPubSub(topic=args.output_topic, with_attributes=True)
        )
        print("JOB_ID", p.run().job_id(), flush=True)
        return
    windowed = (
        p
        | "Read"
        >> beam.io.ReadFromPubSub(subscription=args.input_subscription, timestamp_attribute="ts", id_label="id")
        | "Parse" >> beam.Map(lambda data: data.decode().split(","))
        | "Key" >> beam.Map(lambda fields: (fields[0], int(fields[1]))).with_output_types(tuple[str, int])
        | "Window" >> beam.WindowInto(beam.window.FixedWindows(60))
    )
    if args.reshuffle:
        windowed = windowed | "Reshuffle" >> beam.Reshuffle() | "ReshufflePerKey" >> ReshufflePerKey()
    sums = windowed | "Sum" >> beam.CombinePerKey(sum)
    (
        sums
        | "Format"
        >> beam.ParDo(lambda kv, window=beam.DoFn.WindowParam: [f"{kv[0]},{kv[1]},{int(window.start)}".encode()])
        | "Write" >> beam.io.WriteToPubSub(topic=args.output_topic)
    )
    if args.bigquery:
        (
            sums
            | "Row"
            >> beam.ParDo(
                lambda kv, window=beam.DoFn.WindowParam: [
                    {"key": kv[0], "sum": kv[1], "window_start": int(window.start)}
                ]
            )
            | "WriteRows"
            >> beam.io.WriteToBigQuery(
                args.bigquery,
                schema=SCHEMA,
                method=beam.io.WriteToBigQuery.Method.STREAMING_INSERTS,
                create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
                write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
            )
        )
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)


if __name__ == "__main__":
    main()
