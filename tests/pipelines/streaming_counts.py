"""A streaming pipeline over a local log (beamport.io.ReadFromLocalLog), submitted without waiting.

    streaming_counts.py MODE LOG OUT [--version N] [--count-step NAME] [--fail-while PATH] -- DataflowRunner flags...

MODE counts: a running count per key, kept in state (key,count,line to OUT, a line per element); a line
"KEY,boom" fails its bundle for as long as PATH exists (--fail-while: a fault that outlives Flink's restarts).
MODE windows: elements per key and one-hour event-time window (a line's second field is its time).
MODE python-windows: the same, its windows a WindowFn of the pipeline's own (pickled Python, which Flink refuses).
MODE timers: per key, elements gathered in state until an event-time timer a minute after the first fires
(key,n when the watermark passes it).
Each output line is appended to OUT by the pipeline itself, tagged with --version (update tests).
"""

import argparse
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate
from apache_beam.transforms.window import FixedWindows

from beamport.io import ReadFromLocalLog


class HourWindows(beam.window.NonMergingWindowFn):
    """One-hour windows, written as pickled Python (only Python SDK workers run it)."""

    def assign(self, context):
        start = context.timestamp - context.timestamp % 3600
        return [beam.window.IntervalWindow(start, start + 3600)]

    def get_window_coder(self):
        return beam.coders.coders.IntervalWindowCoder()


class RunningCount(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", beam.coders.VarIntCoder())

    def __init__(self, fail_while=""):
        self.fail_while = fail_while

    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        key, line = element
        if line.endswith(",boom") and self.fail_while and os.path.exists(self.fail_while):
            raise RuntimeError(f"boom: {self.fail_while} exists")
        n = (count.read() or 0) + 1
        count.write(n)
        yield f"{key},{n},{line}"


class GatherForAMinute(beam.DoFn):
    SEEN = userstate.BagStateSpec("seen", beam.coders.StrUtf8Coder())
    DUE = userstate.TimerSpec("due", userstate.TimeDomain.WATERMARK)

    def process(
        self,
        element,
        timestamp=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        due=beam.DoFn.TimerParam(DUE),
    ):
        key, line = element
        if not list(seen.read()):
            due.set(timestamp + 60)
        seen.add(line)

    @userstate.on_timer(DUE)
    def flush(self, key=beam.DoFn.KeyParam, seen=beam.DoFn.StateParam(SEEN)):
        lines = list(seen.read())
        seen.clear()
        yield f"{key},{len(lines)}"


class FlinkRestarts(PipelineOptions):
    """Beam's Flink runner's options (FlinkPipelineOptions), declared so that DataflowRunner passes them on."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--number_of_execution_retries", type=int, default=None)
        parser.add_argument("--checkpointing_interval", type=int, default=None)
        parser.add_argument("--max_bundle_time_mills", type=int, default=None)


class AppendTo(beam.DoFn):
    def __init__(self, path, version):
        self.path, self.version = path, version

    def process(self, text):
        with open(self.path, "a") as out:
            out.write(f"v{self.version}|{text}\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["counts", "windows", "python-windows", "timers"])
    parser.add_argument("log")
    parser.add_argument("out")
    parser.add_argument("--version", default="1")
    parser.add_argument("--count-step", default="Count")
    parser.add_argument("--fail-while", default="")
    args, beam_args = parser.parse_known_args()
    p = beam.Pipeline(options=PipelineOptions(beam_args))
    if args.mode == "counts":
        lines = p | "Read" >> ReadFromLocalLog(args.log)
        keyed = lines | "Key" >> beam.Map(lambda line: (line.split(",")[0], line)).with_output_types(tuple[str, str])
        texts = keyed | args.count_step >> beam.ParDo(RunningCount(args.fail_while))
    elif args.mode == "timers":
        lines = p | "Read" >> ReadFromLocalLog(args.log, timestamp_fn=lambda line: float(line.split(",")[1]))
        keyed = lines | "Key" >> beam.Map(lambda line: (line.split(",")[0], line)).with_output_types(tuple[str, str])
        texts = keyed | "Gather" >> beam.ParDo(GatherForAMinute())
    else:
        lines = p | "Read" >> ReadFromLocalLog(args.log, timestamp_fn=lambda line: float(line.split(",")[1]))
        texts = (
            lines
            | "Window" >> beam.WindowInto(HourWindows() if args.mode == "python-windows" else FixedWindows(3600))
            | "Key" >> beam.Map(lambda line: (line.split(",")[0], 1))
            | "Sum" >> beam.CombinePerKey(sum)
            | "Format" >> beam.MapTuple(lambda key, n: f"{key},{n}")
        )
    texts | "Write" >> beam.ParDo(AppendTo(args.out, args.version))
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
