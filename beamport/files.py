"""The operator's file policy: which files named in requests Beamport may read and write.

Requests name files (a job's pipelineUrl, its staged packages, temp and staging locations). Beamport
reads and writes them only under roots the operator allows: by default the data dir and the directory
the server was started in, more with --allow-path. Anything else is PERMISSION_DENIED, naming the path.

gs:// locations are read through Beam's GCS IO, and only when a GCS endpoint is configured
(STORAGE_EMULATOR_HOST): without it Beamport would reach for Google's real Cloud Storage with whatever
credentials the machine has, which is not what a self-hosted service should do behind its operator's back.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from beamport.errors import ApiError

GCS_EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(location: str) -> str | None:
    """The URL scheme of a location ("gs", "file", ...), or None for a plain path."""
    match = _SCHEME.match(location)
    return match.group(1).lower() if match else None


class FilePolicy:
    """Checks locations against the allowed roots, and reads files that pass.

    The server's roots are Settings.allowed_roots(): the data dir, the start directory, each --allow-path.
    """

    def __init__(self, roots: list[Path] | list[str], private: list[Path] | list[str] = ()):
        # Roots are compared in their real form, so a root reached through a symlink still matches.
        self.roots = [os.path.realpath(os.fspath(root)) for root in roots]
        # Beamport's own files inside a root (its keys, its database): never a job's to read or write.
        self.private = [os.path.realpath(os.fspath(path)) for path in private]

    def check(self, location: str) -> str:
        """The location to use for `location` if the policy allows it, else ApiError.

        Local files (plain absolute paths or file:// URLs) come back as their real path, with
        symlinks and `..` resolved: that is the path that was checked, so the caller must use it.
        gs:// locations come back unchanged.
        """
        if not isinstance(location, str) or not location:
            raise ApiError("INVALID_ARGUMENT", f"A file location must be a non-empty string, not {location!r}.")
        scheme = scheme_of(location)
        if scheme == "gs":
            return self._check_gcs(location)
        if scheme == "file":
            path = _path_of_file_url(location)
        elif scheme is None:
            path = location
        else:
            raise ApiError(
                "INVALID_ARGUMENT",
                f"{location} has the unsupported scheme {scheme}://: Beamport reads local paths, file:// URLs "
                "and gs:// (with a GCS endpoint configured).",
            )
        if not os.path.isabs(path):
            # Relative to the submitter's directory, which Beamport cannot know.
            raise ApiError(
                "INVALID_ARGUMENT",
                f"{location} is a relative path: Beamport cannot know what it is relative to. "
                "Use absolute paths (e.g. for --temp_location and --staging_location).",
            )
        real = os.path.realpath(path)
        if not any(_is_within(real, root) for root in self.roots):
            shown = path if real == os.path.normpath(path) else f"{path} (resolved: {real})"
            raise ApiError(
                "PERMISSION_DENIED",
                f"{shown} is outside the allowed roots: {', '.join(self.roots)}. "
                "The operator can allow more directories with --allow-path.",
            )
        if any(_is_within(real, private) for private in self.private):
            raise ApiError("PERMISSION_DENIED", f"{location} is one of Beamport's own files (keys, database).")
        return real

    def check_pattern(self, pattern: str) -> str:
        """check() for a file pattern: its part before the first wildcard must be allowed."""
        cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
        checked = self.check(pattern[:cut] or pattern)
        pattern_path = os.path.normpath(_path_of_file_url(pattern) if scheme_of(pattern) == "file" else pattern)
        for private in self.private:  # a pattern that would match Beamport's own files (or files in its folders)
            if fnmatch.fnmatchcase(private, pattern_path) or fnmatch.fnmatchcase(private + "/x", pattern_path):
                raise ApiError("PERMISSION_DENIED", f"{pattern} would match Beamport's own files (keys, database).")
        return checked

    def read_bytes(self, location: str) -> bytes:
        """The whole content of an allowed file."""
        checked = self.check(location)
        if scheme_of(checked) == "gs":
            return _read_gcs(checked)
        try:
            with open(checked, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ApiError("NOT_FOUND", f"{location} does not exist.") from None
        except IsADirectoryError:
            raise ApiError("INVALID_ARGUMENT", f"{location} is a directory, not a file.") from None
        except PermissionError:
            raise ApiError("PERMISSION_DENIED", f"{location} cannot be read by the Beamport process.") from None

    def _check_gcs(self, location: str) -> str:
        if not os.environ.get(GCS_EMULATOR_VARIABLE):
            raise ApiError(
                "FAILED_PRECONDITION",
                f"{location} is on Google Cloud Storage, and this Beamport has no GCS endpoint configured. "
                f"Set {GCS_EMULATOR_VARIABLE} (e.g. {GCS_EMULATOR_VARIABLE}=http://localhost:9023) in the "
                "environment of the server and its workers to use a GCS-compatible store, or use local paths.",
            )
        if not re.match(r"^gs://[^/]+/.+", location):
            raise ApiError("INVALID_ARGUMENT", f"{location} is not a gs://BUCKET/OBJECT location.")
        return location


def _is_within(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def _path_of_file_url(location: str) -> str:
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ApiError("INVALID_ARGUMENT", f"{location} names the host {parts.netloc}: only local files are read.")
    return unquote(parts.path)


def _read_gcs(location: str) -> bytes:
    # Beam's own GCS client, so gs:// behaves here as it does in the pipeline; with STORAGE_EMULATOR_HOST
    # set and no credentials asked for, google-cloud-storage talks to the configured endpoint anonymously.
    from beamport.lazy_imports import beam_module

    gcsio = beam_module("apache_beam.io.gcp.gcsio")
    options = beam_module("apache_beam.options.pipeline_options").PipelineOptions([])
    client = gcsio.GcsIO(gcsio.create_storage_client(options, use_credentials=False), options)
    try:
        with client.open(location, "r") as handle:
            return handle.read()
    except Exception as exc:
        if type(exc).__name__ == "NotFound":
            raise ApiError("NOT_FOUND", f"{location} does not exist.") from None
        endpoint = os.environ.get(GCS_EMULATOR_VARIABLE)
        raise ApiError("UNAVAILABLE", f"{location} could not be read from {endpoint}: {exc}") from exc
