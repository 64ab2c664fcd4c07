"""What an earlier attempt of a job left in its output folders: removed before the job runs again.

Beam's file sinks (WriteToText, WriteToParquet, ... : FileBasedSink) write each run's files into a temporary
directory next to the output, `<dir>/beam-temp-<prefix>-<uuid1 hex>`, and move them into place only once the
run succeeds, deleting the directory. An attempt killed before that (its worker lost, its lease revoked, the
server restarted) leaves the directory behind, and the retry makes a new one beside it: without a cleanup,
every killed attempt leaves a copy of its partial output in the user's folder.

Which directories are a job's own: those next to a file sink of the job's pipeline (the sink's `file_pattern`,
in the transform's display data), named after the sink's prefix, whose uuid1 (a time) is later than the job's
creation (the job id begins with it). Another job writing to the same output prefix at the same time would
have its directory removed too; two jobs writing the same files clobber each other's output anyway.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from calendar import timegm
from pathlib import Path

from apache_beam.portability.api import beam_runner_api_pb2

from beamport.engine.base import StagedJob
from beamport.errors import ApiError

log = logging.getLogger(__name__)

_LABELLED = "beam:display_data:labelled:v1"
_SINK_KEYS = ("file_pattern", "file_path_prefix")
_TEMP_DIR = re.compile(r"beam-temp-(?P<prefix>.*)-(?P<uuid>[0-9a-f]{32})\Z")
_JOB_ID_TIME = re.compile(r"(\d{4}-\d\d-\d\d_\d\d_\d\d_\d\d)-")
_UUID_EPOCH = 0x01B21DD213814000  # 1582-10-15 to 1970-01-01, in the 100 ns units of a uuid1's time
SKEW_S = 120  # the job id's clock (the server's) and the uuid1's (the worker's) may differ this much


def clean_up_earlier_attempts(staged: StagedJob, attempt: int, files=None) -> list[str]:
    """Remove the temporary directories earlier attempts of this job left in its file sinks' folders (for attempt
    2 and later); return messages for the job saying what was removed (none when nothing was). `files`: the
    worker's FilePolicy: only folders it allows are touched. Never raises: a cleanup that fails is logged."""
    if attempt <= 1:
        return []
    try:
        return _clean_up(staged, files)
    except Exception:  # the run must go ahead whatever happened here
        log.exception("cleaning up after earlier attempts of job %s failed", staged.job_id)
        return []


def _clean_up(staged: StagedJob, files) -> list[str]:
    created = _created_s(staged.job_id)
    if created is None:
        return []  # not an id with a creation time: no telling this job's directories from others'
    removed: list[str] = []
    for folder, basename in sorted(_sink_folders(staged.pipeline)):
        if files is not None:
            try:  # a folder the job may write into (its real path)
                folder = files.check_output(folder, folder=True)
            except ApiError:
                continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMP_DIR.match(entry.name)
            if not match or not basename.startswith(match["prefix"]) or not entry.is_dir(follow_symlinks=False):
                continue
            made = _uuid1_time_s(match["uuid"])
            if made is None or made < created - SKEW_S or made > time.time() + SKEW_S:
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(entry.path)
    if not removed:
        return []
    log.info("job %s: removed %s", staged.job_id, ", ".join(removed))
    return [
        f"Removed {len(removed)} temporary director{'y' if len(removed) == 1 else 'ies'} that earlier attempts of "
        f"this job left in its output folders: {', '.join(removed)}."
    ]


def _sink_folders(pipeline: beam_runner_api_pb2.Pipeline) -> set[tuple[str, str]]:
    """(folder, file name pattern) of each local file sink of the pipeline, from its transforms' display data."""
    found = set()
    for transform in pipeline.components.transforms.values():
        for item in transform.display_data:
            if item.urn != _LABELLED:
                continue
            payload = beam_runner_api_pb2.LabelledPayload.FromString(item.payload)
            if payload.key not in _SINK_KEYS or not payload.string_value:
                continue
            pattern = payload.string_value
            if pattern.startswith("file://"):
                pattern = pattern[len("file://") :]
            if "://" in pattern or not os.path.isabs(pattern):
                continue  # gs:// and other file systems: not cleaned up here
            path = Path(pattern)
            found.add((str(path.parent), path.name))
    return found


def _created_s(job_id: str) -> float | None:
    """The job's creation time (seconds since the epoch, to the second), from its id (Dataflow's format)."""
    match = _JOB_ID_TIME.match(job_id)
    if not match:
        return None
    try:
        return float(timegm(time.strptime(match[1], "%Y-%m-%d_%H_%M_%S")))
    except ValueError:
        return None


def _uuid1_time_s(hex_: str) -> float | None:
    value = uuid.UUID(hex=hex_)
    if value.version != 1:
        return None
    return (value.time - _UUID_EPOCH) / 1e7
