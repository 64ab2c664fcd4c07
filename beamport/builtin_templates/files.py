"""What the file-handling built-in templates share: the operator's file policy, checked where files are
opened (in the worker, at run time), matching files, reading text, copying through Beam's compressions,
writing text files, the failure file.

Every file a built-in template reads or writes goes through the worker's FilePolicy (beamport/files.py),
which staging gives the pipeline's processes in the environment (POLICY_VARIABLE): the service checked the
parameters when the template was launched, and the worker checks again when it opens each file, so that a
directory swapped for a link leading outside the allowed roots while the job waited is refused (naming the
path), not followed. A run without a policy (not on a Beamport worker) opens no file.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil

import apache_beam as beam
from apache_beam.io import textio
from apache_beam.io.filesystem import CompressedFile, CompressionTypes, FileSystem
from apache_beam.io.filesystems import FileSystems

from beamport.files import POLICY_VARIABLE, FilePolicy, scheme_of

FAILED = "failed"  # the tag of the (path, error) outputs of files that could not be handled
_CHUNK = 1 << 20


# -- the worker's policy --------------------------------------------------------------------------


def worker_policy() -> FilePolicy:
    """The file policy of the worker running this pipeline (exported to the environment by staging)."""
    raw = os.environ.get(POLICY_VARIABLE)
    if not raw:
        raise PermissionError(
            f"No file policy: Beamport's built-in templates run on Beamport's workers, which give the pipeline "
            f"their policy (the environment variable {POLICY_VARIABLE}); without it they open no file."
        )
    return _policy(raw)


@functools.lru_cache(maxsize=8)
def _policy(raw: str) -> FilePolicy:
    return FilePolicy.from_json(raw)


def _is_local(path: str) -> bool:
    return scheme_of(path) != "gs"


def match(pattern: str) -> list[str]:
    """The files a pattern matches now, each allowed by the policy (else an error naming it)."""
    policy = worker_policy()
    if _is_local(pattern):
        return policy.match(pattern)
    policy.check(pattern)  # gs://: only with a GCS endpoint configured
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list]


def open_read(path: str, compression=CompressionTypes.AUTO):
    """An allowed file, open for reading, decompressed as its extension says (AUTO) or as given."""
    if not _is_local(path):
        worker_policy().check(path)
        return FileSystems.open(path, compression_type=compression)
    raw = worker_policy().open_read(path)
    compression = FileSystem._get_compression_type(path, compression)
    return raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type=compression)


def create(path: str, compression=CompressionTypes.AUTO):
    """An allowed file, created for writing (with its directories), compressed as its extension says (AUTO)
    or as given."""
    if not _is_local(path):
        worker_policy().check_output(path)
        return FileSystems.create(path, compression_type=compression)
    raw = worker_policy().open_write(path)
    compression = FileSystem._get_compression_type(path, compression)
    return raw if compression == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type=compression)


def delete(path: str) -> None:
    worker_policy().check_output(path)
    FileSystems.delete([path])


def check_output(location: str, folder: bool = False) -> str:
    return worker_policy().check_output(location, folder=folder)


# -- reading ------------------------------------------------------------------------------------------


class MatchFiles(beam.DoFn):
    """The files a pattern matches, matched at run time: the pattern is a template parameter. Matching
    nothing fails the job, naming the pattern, as Google's templates do (TextIO's EmptyMatchTreatment.DISALLOW,
    in Beam's words): a job that read nothing because of a typo must not end DONE with an empty output."""

    def __init__(self, pattern):
        self.pattern = pattern

    def process(self, _):
        pattern = self.pattern.get()
        found = match(pattern)
        if not found:
            raise FileNotFoundError(f"No files matched spec: {pattern}")
        yield from found


class ReadLines(beam.DoFn):
    """The lines of a file (without their line ends, \\n or \\r\\n), as UTF-8 text, as ReadFromText reads
    them; compressed files by their extension."""

    def process(self, path):
        with open_read(path) as handle:
            for line in iter(handle.readline, b""):
                yield line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")


def spread_matches(pipeline, pattern, label: str = ""):
    """The files matching a pattern (a ValueProvider), spread over the workers."""
    return (
        pipeline
        | f"{label}Start" >> beam.Create([None])
        | f"{label}Match" >> beam.ParDo(MatchFiles(pattern))
        | f"{label}Spread" >> beam.Reshuffle()
    )


class ReadText(beam.PTransform):
    """ReadFromText's lines, with every file matched and opened through the worker's policy."""

    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        return spread_matches(pipeline, self.pattern) | "Lines" >> beam.ParDo(ReadLines())


# -- writing ------------------------------------------------------------------------------------------


class _CheckedTextSink(textio._TextSink):
    """Beam's text sink, checking against the worker's policy the directory it writes into before it
    creates its temporary directory, each temporary file before it opens it, and again before it renames
    them into place."""

    def initialize_write(self):
        check_output(self.file_path_prefix.get())
        return super().initialize_write()

    def open(self, temp_path):
        check_output(temp_path)
        return super().open(temp_path)

    def pre_finalize(self, init_result, writer_results):
        check_output(self.file_path_prefix.get())
        return super().pre_finalize(init_result, writer_results)

    def finalize_write(self, init_result, writer_results, unused_pre_finalize_results):
        check_output(self.file_path_prefix.get())
        yield from super().finalize_write(init_result, writer_results, unused_pre_finalize_results)


class WriteToText(textio.WriteToText):
    """Beam's WriteToText through the worker's policy (see _CheckedTextSink)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sink.__class__ = _CheckedTextSink


# -- copying, and the failure file -------------------------------------------------------------------


def copy_file(source, source_type, target, target_type):
    """Copy source to target, (de)compressing on the way, both through the worker's policy."""
    with open_read(source, source_type) as src:
        dst = create(target, target_type)
        try:
            with dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        except Exception:
            delete(target)  # leave no partial file behind
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


def write_failures(failed, failure_file) -> None:
    """All the failures, as one list (even empty), to the failure file (see WriteFailures)."""
    (failed | "AllFailures" >> beam.combiners.ToList() | "WriteFailures" >> beam.ParDo(WriteFailures(failure_file)))


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
        with create(path, CompressionTypes.UNCOMPRESSED) as f:
            f.write(text.getvalue().encode("utf-8"))
