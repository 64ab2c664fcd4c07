"""What the file-handling built-in templates share: matching files at run time, copying them through
Beam's file systems, and the failure file."""

from __future__ import annotations

import csv
import io
import shutil

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

FAILED = "failed"  # the tag of the (path, error) outputs of files that could not be handled
_CHUNK = 1 << 20


class MatchFiles(beam.DoFn):
    """The files a pattern matches, matched at run time: the pattern is a template parameter. Matching
    nothing is an error, unless the pattern has a wildcard (as with Java's FileIO.match())."""

    def __init__(self, pattern):
        self.pattern = pattern

    def process(self, _):
        pattern = self.pattern.get()
        found = FileSystems.match([pattern])[0].metadata_list
        if not found and not any(c in pattern for c in "*?["):
            raise FileNotFoundError(f"No file matches {pattern!r}.")
        yield from found


def copy_file(source, source_type, target, target_type):
    """Copy source to target through Beam's file systems, (de)compressing on the way."""
    with FileSystems.open(source, compression_type=source_type) as src:
        dst = FileSystems.create(target, compression_type=target_type)
        try:
            with dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except Exception:
            FileSystems.delete([target])  # leave no partial file behind
            raise


def error_text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def copy_or_fail(source, source_type, target, target_type):
    """Outputs of a DoFn copying one file: the target written, or (source, error) on the FAILED output."""
    try:
        copy_file(source, source_type, target, target_type)
    except Exception as exc:
        return [beam.pvalue.TaggedOutput(FAILED, (source, error_text(exc)))]
    return [target]


def spread_matches(pipeline, pattern):
    """The files matching a pattern (a ValueProvider), spread over the workers."""
    return (
        pipeline
        | "Start" >> beam.Create([None])
        | "Match" >> beam.ParDo(MatchFiles(pattern))
        | "Spread" >> beam.Reshuffle()
    )


def write_failures(failed, failure_file) -> None:
    """All the failures, as one list (even empty), to the failure file (see WriteFailures)."""
    (
        failed
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.ParDo(WriteFailures(failure_file))
    )


class WriteFailures(beam.DoFn):
    """Write all the failures (one list) to the failure file, or fail the job when there is none."""

    def __init__(self, failure_file):
        self.failure_file = failure_file

    def process(self, failures):
        path = self.failure_file.get()
        if not path:
            if failures:
                listed = "; ".join(f"{source}: {error}" for source, error in sorted(failures)[:10])
                raise RuntimeError(f"{len(failures)} file(s) failed (set outputFailureFile to list them): {listed}")
            return
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(sorted(failures))
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(text.getvalue().encode("utf-8"))
