"""The operator's file policy: which files named in requests Beamport may read and write.

Requests name files (a job's pipelineUrl, its staged packages, temp and staging locations, template
parameters, SQL tables and outputs, flex templates' specs and programs). Beamport reads and writes them only
under roots the operator allows: by default the data dir and the directory the server was started in, more
with --allow-path; never Beamport's own files there (its keys, its database). Anything else is
PERMISSION_DENIED, naming the path.

One resolver for every kind of location (docs/security.md, "Files"):
- check(): a file or directory read as it is named: its real path (symlinks and `..` resolved by the file
  system, as opening it would) must lie under a root.
- check_pattern(): a file pattern read: wildcards (`*?[`) only in the last component, never `..` after a
  wildcard, no `**`; its directory is checked as above, and every file it matches now must lie under a root
  too (a link in the directory may lead elsewhere).
- check_output(): a place written to: a path, never a pattern (no wildcards); a prefix or file is checked as
  the directory it writes into (Beam writes PREFIX-SSSSS-of-NNNNN and beam-temp-* directories next to it)
  plus where the name itself leads; a folder as itself.
Each answers the canonical path, which is what the caller must use: the job gets the path that was checked.

Workers check again where files are opened (open_read, open_write, match): the built-in templates' pipelines
get the worker's policy from the environment variable POLICY_VARIABLE, which staging sets in the process that
runs the work item (beamport/engine/staging.py) and the SDK harness processes it starts inherit, so a link
swapped after the launch's check is still refused. open_read verifies the file it actually opened
(/proc/self/fd), not only the path it meant to open.

gs:// locations are read through Beam's GCS IO, and only when a GCS endpoint is configured
(STORAGE_EMULATOR_HOST): without it Beamport would reach for Google's real Cloud Storage with whatever
credentials the machine has, which is not what a self-hosted service should do behind its operator's back.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from beamport.errors import ApiError

GCS_EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
# The environment variable that carries the worker's policy to the built-in templates' pipelines (set by
# staging in the process that runs a work item; its SDK harness processes inherit it).
POLICY_VARIABLE = "BEAMPORT_FILE_POLICY"
WILDCARDS = "*?["
# The pipeline options that name directories a job writes into, as each SDK spells them (Python and Go:
# snake_case; Java: camelCase, and its GCP temp location): all are checked against the policy at creation.
LOCATION_OPTIONS = ("temp_location", "staging_location", "tempLocation", "stagingLocation", "gcpTempLocation")
_GCS_RESOURCE = "storage.googleapis.com/"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme_of(location: str) -> str | None:
    """The URL scheme of a location ("gs", "file", ...), or None for a plain path."""
    match = _SCHEME.match(location)
    return match.group(1).lower() if match else None


def gcs_resource_as_url(location: str) -> str:
    """Dataflow's name of a GCS resource (environment.tempStoragePrefix: `storage.googleapis.com/BUCKET/OBJECT`
    or `BUCKET.storage.googleapis.com/OBJECT`, as Beam's DataflowRunner sends a gs:// temp location) as its
    gs:// URL; any other location unchanged."""
    if location.startswith(_GCS_RESOURCE):
        return "gs://" + location.removeprefix(_GCS_RESOURCE)
    bucket, dot_host, rest = location.partition("." + _GCS_RESOURCE)
    if dot_host and bucket and "/" not in bucket:
        return f"gs://{bucket}/{rest}"
    return location


def has_wildcard(text: str) -> bool:
    return any(c in text for c in WILDCARDS)


class FilePolicy:
    """Checks locations against the allowed roots, and reads files that pass.

    The server's roots are Settings.allowed_roots(): the data dir, the start directory, each --allow-path.
    """

    def __init__(self, roots: Sequence[Path] | Sequence[str], private: Sequence[Path] | Sequence[str] = ()):
        # Roots are compared in their real form, so a root reached through a symlink still matches.
        self.roots = [os.path.realpath(os.fspath(root)) for root in roots]
        # Beamport's own files inside a root (its keys, its database): never a job's to read or write.
        self.private = [os.path.realpath(os.fspath(path)) for path in private]

    # -- for workers' pipelines -----------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"roots": self.roots, "private": self.private})

    @classmethod
    def from_json(cls, text: str) -> FilePolicy:
        data = json.loads(text)
        return cls(data["roots"], data.get("private", []))

    def export(self, environ=os.environ) -> None:
        """Give this policy to the pipelines this process runs, and to the processes it starts."""
        environ[POLICY_VARIABLE] = self.to_json()

    # -- the resolver -----------------------------------------------------------------------------

    def check(self, location: str) -> str:
        """The location to use for `location` if the policy allows it, else ApiError.

        Local files (plain absolute paths or file:// URLs) come back as their real path, with
        symlinks and `..` resolved: that is the path that was checked, so the caller must use it.
        gs:// locations come back unchanged, and Dataflow's names of GCS resources (storage.googleapis.com/B/O, in
        tempStoragePrefix and packages) as their gs:// URLs.
        """
        path = self.local_path(location)
        if path is None:
            return self._check_gcs(location)
        return self._real(path, location)

    def check_pattern(self, pattern: str) -> str:
        """check() for a file pattern that is read: the canonical pattern (the real directory, then the
        wildcards of the last component), once the directory and every file the pattern matches now are
        allowed. A pattern without wildcards is a file: its real directory and its name."""
        path = self.local_path(pattern)
        if path is None:
            return self._check_gcs(pattern)
        directory, name = self._split_pattern(path, pattern)
        real_dir = self._real(directory, pattern)
        if not has_wildcard(name):
            if name in ("", ".", ".."):
                return self._real(path, pattern)
            canonical = os.path.join(real_dir, name)
            self._real(canonical, pattern)  # where the name itself leads (a link) must be allowed too
            return canonical
        for private in self.private:  # a pattern that would match Beamport's own files (or its folders)
            if os.path.dirname(private) == real_dir and fnmatch.fnmatchcase(os.path.basename(private), name):
                raise ApiError("PERMISSION_DENIED", f"{pattern} would match Beamport's own files (keys, database).")
        self._entries(real_dir, name, pattern)  # every match, now, must be allowed
        return os.path.join(real_dir, name)

    def check_output(self, location: str, folder: bool = False) -> str:
        """The canonical location to write to, if allowed. An output is a path, never a pattern.

        folder=False: a file, or a prefix of files (Beam's WriteToText writes PREFIX-SSSSS-of-NNNNN and
        temporary beam-temp-* directories next to it): checked as the directory it writes into, and the
        name itself must not lead elsewhere (an existing link). Answers the real directory and the name.
        folder=True: a directory written into: its real path.
        """
        path = self.local_path(location)
        if path is None:
            if has_wildcard(location):
                raise _not_a_pattern(location)
            return self._check_gcs(location)
        if has_wildcard(path):
            raise _not_a_pattern(location)
        if folder:
            return self._real(path, location)
        head, name = os.path.split(path)
        if not name:  # PREFIX/: files named -SSSSS-of-NNNNN inside the directory
            return self._real(path, location).rstrip("/") + "/"
        if name in (".", ".."):
            raise ApiError(
                "INVALID_ARGUMENT", f"{location} ends in {name!r}: an output must end in the name of what is written."
            )
        target = os.path.join(self._real(head, location), name)
        self._real(target, location)
        return target

    def match(self, pattern: str) -> list[str]:
        """The local files a pattern matches now, each allowed (else ApiError naming it), sorted: the real
        directory joined with each matching name. A pattern without wildcards matches the file it names, if
        it exists. Regular files only (and links to them); names starting with a dot only when the pattern's
        name does too, as a shell's glob."""
        path = self.local_path(pattern)
        if path is None:
            raise ApiError("INVALID_ARGUMENT", f"{pattern} is not a local file pattern.")
        directory, name = self._split_pattern(path, pattern)
        if not has_wildcard(name):
            canonical = self.check_pattern(pattern)
            return [canonical] if os.path.isfile(canonical) else []
        real_dir = self._real(directory, pattern)
        return self._entries(real_dir, name, pattern)

    def local_path(self, location: str) -> str | None:
        """The absolute local path a location names (file:// URLs decoded), None for gs://; ApiError
        INVALID_ARGUMENT for what names no local file: not a string, NUL bytes, relative paths, another host,
        another scheme."""
        if not isinstance(location, str) or not location:
            raise ApiError("INVALID_ARGUMENT", f"A file location must be a non-empty string, not {location!r}.")
        if "\x00" in location:
            raise ApiError("INVALID_ARGUMENT", f"{location!r} contains a NUL byte: it names no file.")
        scheme = scheme_of(location)
        if scheme == "gs" or gcs_resource_as_url(location) != location:
            return None
        if scheme == "file":
            path = _path_of_file_url(location)
            if "\x00" in path:
                raise ApiError("INVALID_ARGUMENT", f"{location!r} contains an encoded NUL byte: it names no file.")
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
        return path

    # -- opening files where they are checked ------------------------------------------------------

    def open_read(self, location: str) -> BinaryIO:
        """An allowed local file, open for reading. The file actually opened is checked (through
        /proc/self/fd), so a link swapped in between the check and the open is refused, not followed."""
        real = self.check(location)
        if scheme_of(real) == "gs":
            raise ApiError("INVALID_ARGUMENT", f"{location} is not a local file.")
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise ApiError("NOT_FOUND", f"{location} does not exist.") from None
        except PermissionError:
            raise ApiError("PERMISSION_DENIED", f"{location} cannot be read by the Beamport process.") from None
        except OSError as exc:  # ELOOP: the last component became a link after the check
            message = f"{location} changed while it was being opened ({exc.strerror})."
            raise ApiError("PERMISSION_DENIED", message) from None
        try:
            self._check_opened(fd, real, location)
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise ApiError("INVALID_ARGUMENT", f"{location} is a directory, not a file.")
            if not stat.S_ISREG(mode):
                raise ApiError("INVALID_ARGUMENT", f"{location} is not a regular file.")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    def open_write(self, location: str) -> BinaryIO:
        """An allowed local file, created (or truncated) for writing, with the directories above it. The
        directory is opened and checked as opened, and the file created in it without following a link."""
        target = self.check_output(location)
        if scheme_of(target) == "gs":
            raise ApiError("INVALID_ARGUMENT", f"{location} is not a local file.")
        parent, name = os.path.split(target)
        if not name:
            raise ApiError("INVALID_ARGUMENT", f"{location} names a directory, not a file to write.")
        os.makedirs(parent, exist_ok=True)
        dir_fd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            self._check_opened(dir_fd, parent, location)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(name, flags, 0o666, dir_fd=dir_fd)
            except OSError as exc:
                raise ApiError("PERMISSION_DENIED", f"{location} cannot be written: {exc.strerror}.") from None
        finally:
            os.close(dir_fd)
        return os.fdopen(fd, "wb")

    def read_bytes(self, location: str) -> bytes:
        """The whole content of an allowed file."""
        checked = self.check(location)
        if scheme_of(checked) == "gs":
            return _read_gcs(checked)
        with self.open_read(location) as handle:
            return handle.read()

    # -- inside ---------------------------------------------------------------------------------------

    def _real(self, path: str, location: str) -> str:
        """The real path of a local path, if it lies under a root and is none of Beamport's own files."""
        real = os.path.realpath(path)
        if not self._allowed(real):
            shown = path if real == os.path.normpath(path) else f"{path} (resolved: {real})"
            if location.removeprefix("file://") not in shown and location not in shown:
                shown = f"{shown}, in {location}"
            raise ApiError(
                "PERMISSION_DENIED",
                f"{shown} is outside the allowed roots: {', '.join(self.roots)}. "
                "The operator can allow more directories with --allow-path.",
            )
        if any(_is_within(real, private) for private in self.private):
            raise ApiError("PERMISSION_DENIED", f"{location} is one of Beamport's own files (keys, database).")
        return real

    def _allowed(self, real: str) -> bool:
        return any(_is_within(real, root) for root in self.roots)

    @staticmethod
    def _split_pattern(path: str, pattern: str) -> tuple[str, str]:
        """(directory, last component) of a pattern, refusing wildcards anywhere else, `..` after one, `**`."""
        parts = path.split("/")
        first = next((i for i, part in enumerate(parts) if has_wildcard(part)), None)
        if first is not None:
            if any(part in ("..", ".") for part in parts[first + 1 :]):
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"{pattern} has '..' after a wildcard: a pattern's matches must stay in its directory.",
                )
            if first != len(parts) - 1:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"{pattern} has a wildcard in a directory ({parts[first]!r}): wildcards (* ? [) are allowed "
                    "in the file name only, e.g. /data/in/*.csv.",
                )
            if "**" in parts[first]:
                raise ApiError("INVALID_ARGUMENT", f"{pattern} has '**': patterns do not reach into subdirectories.")
        directory, name = os.path.split(path)
        return directory or "/", name

    def _entries(self, real_dir: str, name: str, pattern: str) -> list[str]:
        """The regular files of real_dir whose names match, each allowed where it leads."""
        try:
            names = sorted(entry.name for entry in os.scandir(real_dir))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except PermissionError:
            raise ApiError("PERMISSION_DENIED", f"The directory of {pattern} cannot be read by Beamport.") from None
        found = []
        for entry in names:
            if entry.startswith(".") and not name.startswith("."):
                continue
            if not fnmatch.fnmatchcase(entry, name):
                continue
            path = os.path.join(real_dir, entry)
            real = self._real(path, pattern)
            if os.path.isfile(real):
                found.append(path)
        return found

    def _check_opened(self, fd: int, meant: str, location: str) -> None:
        """The file open as fd must be allowed: its path as the kernel knows it, or (without /proc) the
        same file as the path checked."""
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = None
        if opened is not None:
            opened = opened.removesuffix(" (deleted)")
            if not self._allowed(opened) or any(_is_within(opened, p) for p in self.private):
                raise ApiError(
                    "PERMISSION_DENIED",
                    f"{location} is outside the allowed roots: it led to {opened} when it was opened "
                    f"(allowed: {', '.join(self.roots)}).",
                )
            return
        opened_stat, meant_stat = os.fstat(fd), os.stat(meant)
        if (opened_stat.st_dev, opened_stat.st_ino) != (meant_stat.st_dev, meant_stat.st_ino):
            raise ApiError("PERMISSION_DENIED", f"{location} changed while it was being opened.")

    def _check_gcs(self, location: str) -> str:
        location = gcs_resource_as_url(location)  # the canonical name: gs://
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


def _not_a_pattern(location: str) -> ApiError:
    return ApiError(
        "INVALID_ARGUMENT",
        f"{location} is where files are written: a path, not a pattern (no * ? [).",
    )


def _is_within(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def _path_of_file_url(location: str) -> str:
    try:
        parts = urlsplit(location)
    except ValueError as exc:
        raise ApiError("INVALID_ARGUMENT", f"{location} is not a valid file:// URL: {exc}.") from None
    if parts.netloc not in ("", "localhost"):
        raise ApiError("INVALID_ARGUMENT", f"{location} names the host {parts.netloc}: only local files are read.")
    if parts.query or parts.fragment:
        raise ApiError("INVALID_ARGUMENT", f"{location} has a query or fragment: a file:// URL names a file only.")
    return unquote(parts.path)


def _read_gcs(location: str) -> bytes:
    # google-cloud-storage's anonymous client: what Beam's GcsIO reads with in a pipeline without credentials
    # (gcsio.create_storage_client(options, use_credentials=False)), without importing Beam (the server never
    # does). With STORAGE_EMULATOR_HOST set, the client talks to the configured endpoint. (Client by its module's
    # full name: mypy takes `from google.cloud import storage` for a missing attribute of the namespace.)
    from google.api_core.exceptions import NotFound
    from google.cloud.storage import Client

    bucket, _, name = location.removeprefix("gs://").partition("/")
    try:
        return Client.create_anonymous_client().bucket(bucket).blob(name).download_as_bytes()
    except NotFound:
        raise ApiError("NOT_FOUND", f"{location} does not exist.") from None
    except Exception as exc:
        endpoint = os.environ.get(GCS_EMULATOR_VARIABLE)
        raise ApiError("UNAVAILABLE", f"{location} could not be read from {endpoint}: {exc}") from exc
