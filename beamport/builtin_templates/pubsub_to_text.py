"""Cloud_PubSub_to_GCS_Text: Pub/Sub messages to windowed text files, as Google's template of that name
(PubsubToText) does.

Parameters (Google's names): inputTopic or inputSubscription, outputDirectory, outputFilenamePrefix (default
"output"), outputFilenameSuffix, outputShardTemplate (default "W-P-SS-of-NN"), windowDuration (default "5m":
Ns, Nm or Nh), numShards (default 1), yearPattern, monthPattern, dayPattern, hourPattern, minutePattern,
userTempLocation.

Each message's data is one line (UTF-8, a newline added), in the file of its fixed event-time window (event
time: the publish time). A window's file is written when the watermark passes its end (a drain closes every
open window): OUTPUT_DIRECTORY/PREFIX + the shard template + SUFFIX, where in the template W is the window
(`2024-01-08T10:00:00.000Z-2024-01-08T10:05:00.000Z`), P the pane (`pane-0-last`), runs of S the shard number
and runs of N the number of shards, zero-padded to the run's length; date patterns in the directory (YYYY, MM,
dd, HH, mm, or the given ones) are the window's end, in UTC. Each message goes to one of numShards shards at
random, and each shard with messages is a file (one per window by default, `00-of-01`, as Google's). A file
is written under a temporary name and renamed into place, so a retried write replaces it whole.
"""

from __future__ import annotations

import os
import random
import re
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beamport.builtin_templates import add_parameters, run_as_template
from beamport.builtin_templates.files import check_output, create
from beamport.builtin_templates.pubsub_source import ReadPubSubParameters
from beamport.builtin_templates.windows import RuntimeFixedWindows


class PubSubToTextOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        add_parameters(
            parser,
            {
                "inputTopic": {"help": "The Pub/Sub topic to read (projects/PROJECT/topics/TOPIC)."},
                "inputSubscription": {"help": "The Pub/Sub subscription to read (projects/P/subscriptions/S)."},
                "outputDirectory": {"help": "The directory of the output files."},
                "outputFilenamePrefix": {"default": "output", "help": "The prefix of each windowed file."},
                "outputFilenameSuffix": {"default": "", "help": "The suffix of each windowed file."},
                "outputShardTemplate": {"default": "W-P-SS-of-NN", "help": "The shard template."},
                "windowDuration": {"default": "5m", "help": "The window size: Ns, Nm or Nh."},
                "numShards": {"default": "1", "help": "The number of files per window (at most)."},
                "userTempLocation": {"help": "Accepted for Google's parameters; files are written in place."},
                "yearPattern": {"help": "The year pattern of the output directory (default YYYY)."},
                "monthPattern": {"help": "The month pattern of the output directory (default MM)."},
                "dayPattern": {"help": "The day pattern of the output directory (default dd)."},
                "hourPattern": {"help": "The hour pattern of the output directory (default HH)."},
                "minutePattern": {"help": "The minute pattern of the output directory (default mm)."},
            },
        )


def shard_count(text: str | None) -> int:
    """numShards: 0 (Google's "the runner decides") or none is one file per window."""
    if not (text or "0").isdigit():
        raise ValueError(f"numShards must be a whole number, not {text!r}.")
    return max(int(text or "0"), 1)


class AssignShard(beam.DoFn):
    """data -> (shard, data), the shard at random among numShards."""

    def __init__(self, shards):
        self.shards = shards

    def setup(self):
        self.count = shard_count(self.shards.get())

    def process(self, data: bytes):
        yield random.randrange(self.count), data


def joda_instant(timestamp) -> str:
    """An instant as Joda's Instant.toString() writes it (Java templates name files with it)."""
    return timestamp.to_utc_datetime().strftime("%Y-%m-%dT%H:%M:%S.") + f"{timestamp.micros // 1000 % 1000:03d}Z"


def pane_text(pane) -> str:
    """A pane as Beam Java's DefaultFilenamePolicy writes it: pane-INDEX, -late, -last."""
    text = f"pane-{pane.index}"
    if pane.timing == beam.utils.windowed_value.PaneInfoTiming.LATE:
        text += "-late"
    if pane.is_last:
        text += "-last"
    return text


def shard_name(template: str, shard: int, shards: int, window_text: str, pane: str) -> str:
    """Beam's shard template: runs of S and N zero-padded to their length, W the window, P the pane."""
    name = re.sub(r"S+", lambda run: f"{shard:0{len(run.group())}d}", template)
    name = re.sub(r"N+", lambda run: f"{shards:0{len(run.group())}d}", name)
    return name.replace("W", window_text).replace("P", pane)


_DEFAULT_PATTERNS = (("YYYY", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"))


def dated_directory(directory: str, end, patterns: list[str | None]) -> str:
    """The directory with its date patterns (the given ones, else Google's defaults) as the window's end.
    A given pattern may be wrapped in characters that are not letters, digits or '/' (`{YYYY}`): the whole
    pattern is replaced. In a gs:// path, the bucket is left alone (as Google's template does); in a local path,
    the directories that exist (the machine's own, such as /home/emma, whose "mm" is no minute)."""
    bucket, path = "", directory
    if directory.startswith("gs://"):
        bucket_end = directory.index("/", 5) + 1 if "/" in directory[5:] else len(directory)
        bucket, path = directory[:bucket_end], directory[bucket_end:]
    else:
        parts = directory.split("/")
        kept = next((n for n in range(len(parts), 0, -1) if os.path.isdir("/".join(parts[:n]) or "/")), 0)
        if 0 < kept < len(parts):
            bucket, path = "/".join(parts[:kept]) + "/", "/".join(parts[kept:])
        elif kept:
            bucket, path = directory, ""
    when = end.to_utc_datetime()
    for (default, strftime), given in zip(_DEFAULT_PATTERNS, patterns, strict=True):
        letters = re.sub(r"[^A-Za-z]", "", given) if given else default
        value = when.strftime(strftime)
        if letters[0] in "yY" and len(letters) == 2:
            value = when.strftime("%y")
        elif letters[0] == "D":  # day of the year
            value = when.strftime("%j")
        path = path.replace(given or default, value)
    return bucket + path


class WriteWindowFile(beam.DoFn):
    """(shard, lines) of one window and pane -> that window's file, written whole."""

    NAMES = ("outputDirectory", "outputFilenamePrefix", "outputFilenameSuffix", "outputShardTemplate", "numShards")
    PATTERNS = ("yearPattern", "monthPattern", "dayPattern", "hourPattern", "minutePattern")

    def __init__(self, params):
        # The ValueProviders only (the options object stays out of the pickled DoFn).
        self.parameters = {name: getattr(params, name) for name in self.NAMES + self.PATTERNS}

    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        shard, lines = element
        value = {name: parameter.get() for name, parameter in self.parameters.items()}
        patterns = [value[name] for name in self.PATTERNS]
        directory = dated_directory(value["outputDirectory"], win.end, patterns).rstrip("/")
        window_text = f"{joda_instant(win.start)}-{joda_instant(win.end)}"
        template = value["outputShardTemplate"] or "W-P-SS-of-NN"
        name = (
            (value["outputFilenamePrefix"] or "")
            + shard_name(template, shard, shard_count(value["numShards"]), window_text, pane_text(pane))
            + (value["outputFilenameSuffix"] or "")
        )
        target = f"{directory}/{name}"
        temporary = f"{directory}/.temp-beamport-{uuid.uuid4().hex}"
        with create(temporary, beam.io.filesystem.CompressionTypes.UNCOMPRESSED) as out:
            for line in lines:
                out.write(line + b"\n")
        check_output(target)
        FileSystems.rename([temporary], [target])
        yield target


def build(pipeline, options):
    params = options.view_as(PubSubToTextOptions)
    return (
        pipeline
        | "Read PubSub Events" >> ReadPubSubParameters(params.inputTopic, params.inputSubscription)
        | "Window" >> beam.WindowInto(RuntimeFixedWindows(params.windowDuration))
        | "Shard" >> beam.ParDo(AssignShard(params.numShards)).with_output_types(tuple[int, bytes])
        | "Group" >> beam.GroupByKey()
        | "Write File(s)" >> beam.ParDo(WriteWindowFile(params))
    )


if __name__ == "__main__":
    run_as_template(build, streaming=True)
