"""A user's pipeline, defined in its own __main__: counters, distributions, a side input,
CoGroupByKey and fixed windows. Run it with any runner's flags; it prints its metrics as JSON.

    python rich_pipeline.py --input IN --output OUT [pipeline flags...]
"""

import argparse
import json
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.transforms import window

STOPWORDS = {"the", "a", "of"}  # a global the workers need: save_main_session carries it


def words_of(line):
    return [w.strip(".,;").lower() for w in line.split() if w.strip(".,;")]


class CountWords(beam.DoFn):
    def __init__(self):
        self.words = Metrics.counter("rich", "words")
        self.lengths = Metrics.distribution("rich", "word_lengths")

    def process(self, line, stop):
        for word in words_of(line):
            if word in stop:
                continue
            self.words.inc()
            self.lengths.update(len(word))
            yield word


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    known, pipeline_args = parser.parse_known_args(argv)
    options = PipelineOptions(pipeline_args)
    options.view_as(SetupOptions).save_main_session = True

    with beam.Pipeline(options=options) as p:
        lines = p | "Read" >> beam.io.ReadFromText(known.input)
        stop = p | "Stopwords" >> beam.Create(sorted(STOPWORDS))
        words = lines | "Words" >> beam.ParDo(CountWords(), stop=beam.pvalue.AsList(stop))
        counts = words | "Count" >> beam.combiners.Count.PerElement()
        lengths = words | "Lengths" >> beam.Map(lambda w: (w, len(w))) | beam.Distinct()
        joined = (
            {"count": counts, "length": lengths}
            | "Join" >> beam.CoGroupByKey()
            | "Shape" >> beam.Map(lambda kv: f"{kv[0]}\t{sorted(kv[1]['count'])}\t{sorted(kv[1]['length'])}")
        )
        windowed = (
            words
            | "Stamp" >> beam.Map(lambda w: window.TimestampedValue(w, len(w) * 10))
            | "Window" >> beam.WindowInto(window.FixedWindows(10))
            | "PerWindow" >> beam.combiners.Count.Globally().without_defaults()
            | "Note"
            >> beam.Map(lambda n: logging.getLogger("rich").warning("a window of %d words", n) or f"window\t{n}")
            | "Unwindow" >> beam.WindowInto(window.GlobalWindows())
        )
        (joined, windowed) | beam.Flatten() | "Write" >> beam.io.WriteToText(known.output)

    result = p.result
    query = result.metrics().query()
    print(
        "METRICS",
        json.dumps(
            {
                "counters": sorted((r.key.step, r.key.metric.name, r.committed) for r in query["counters"]),
                "distributions": sorted(
                    (
                        r.key.step,
                        r.key.metric.name,
                        [r.committed.count, r.committed.sum, r.committed.min, r.committed.max],
                    )
                    for r in query["distributions"]
                ),
            }
        ),
    )


if __name__ == "__main__":
    main()
