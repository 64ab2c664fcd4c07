"""A streaming pipeline that counts, measures, logs, and imports a staged module (issue 19's test pipeline).

    streaming_observed.py LOG OUT [--metrics-until N METRICS_JSON] [--event-times] -- DataflowRunner flags...

Each line of LOG ("key,value") is counted (counter `lines`), its value measured (distribution `values`,
gauge `last`), logged (a WARNING "observed key,value"), and written to OUT by `staged_probe.describe`, a
module the test stages as a wheel (--extra_package) that calls `setup_probe`, a package it stages with
--setup_file (neither is in Beamport's own Python), together with whether the worker loaded the main session
(--save_main_session): with Beam's default pickler it carries the custom coders registered here, and
`staged_probe.Mark`'s is there only once it is loaded.
With --metrics-until, the script waits after submitting until DataflowRunner's `result.metrics().query()`
counts N lines, then writes what it gives to METRICS_JSON. With --event-times, a line's third field is its
event time (seconds since the epoch; "key,value,time"), so the watermark stops when lines stop coming.
"""

import argparse
import json
import logging
import time

import apache_beam as beam
import staged_probe
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.io import ReadFromLocalLog

# Registered before the run: the main session (cloudpickle's) carries the custom coder registrations.
beam.coders.registry.register_coder(staged_probe.Mark, beam.coders.PickleCoder)


class Observe(beam.DoFn):
    def __init__(self):
        self.lines = Metrics.counter("observed", "lines")
        self.values = Metrics.distribution("observed", "values")
        self.last = Metrics.gauge("observed", "last")

    def process(self, line):
        value = int(line.split(",")[1])
        self.lines.inc()
        self.values.update(value)
        self.last.set(value)
        logging.warning("observed %s", line)
        loaded = beam.coders.registry.get_custom_type_coder_tuples([staged_probe.Mark])
        main = "main session loaded" if loaded else "no main session"
        yield f"{staged_probe.describe(line)}|{main}"


class AppendTo(beam.DoFn):
    def __init__(self, path):
        self.path = path

    def process(self, text):
        with open(self.path, "a") as out:
            out.write(text + "\n")


def event_time(line):
    return float(line.split(",")[2])


def plain(value):
    """A metric's value as JSON has it: a distribution [sum, count, min, max], a gauge its value."""
    if hasattr(value, "count") and hasattr(value, "sum"):
        return [value.sum, value.count, value.min, value.max]
    return getattr(value, "value", value)


def rows(results: dict) -> dict:
    """{"step:name": {"committed": ..., "attempted": ...}} of the counters, distributions and gauges."""
    return {
        f"{result.key.step}:{result.key.metric.name}": {
            "committed": plain(result.committed),
            "attempted": plain(result.attempted),
        }
        for kind in ("counters", "distributions", "gauges")
        for result in results[kind]
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("out")
    parser.add_argument("--metrics-until", nargs=2)
    parser.add_argument("--event-times", action="store_true")
    args, beam_args = parser.parse_known_args()
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    _ = (
        p
        | "Read" >> ReadFromLocalLog(args.log, timestamp_fn=event_time if args.event_times else None)
        | "Observe" >> beam.ParDo(Observe())
        | "Write" >> beam.ParDo(AppendTo(args.out))
    )
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
    if args.metrics_until:
        wanted, target = int(args.metrics_until[0]), args.metrics_until[1]
        while True:
            found = rows(result.metrics().query())
            if (found.get("Observe:lines") or {}).get("attempted") == wanted:
                break
            time.sleep(0.5)
        with open(target, "w") as out:
            json.dump(found, out)
