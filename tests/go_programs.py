"""The Go programs the tests run (tests/go/NAME), built once with the Go module proxy and cached by their source's
hash in ~/.cache/beamport/bin. scripts/test builds them ahead (`python tests/go_programs.py`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "go"
PROGRAMS = ("gcs_upload", "default_credentials", "wordcount", "pubsub_sums", "periodic_counts", "bigquery_counts")


class BuildError(Exception):
    pass


def binary(name: str, bin_dir: Path | None = None) -> Path:
    """The program's binary, built now if this source has not been built yet."""
    source = SOURCES / name
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(source.iterdir()))).hexdigest()
    bin_dir = bin_dir or Path.home() / ".cache" / "beamport" / "bin"
    target = bin_dir / f"test-{name.replace('_', '-')}-{digest[:12]}"
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"Go is not installed: tests/go/{name} cannot be built")
    bin_dir.mkdir(parents=True, exist_ok=True)
    # In a copy: resolving the module's dependencies writes go.sum.
    with tempfile.TemporaryDirectory() as build:
        shutil.copytree(source, build, dirs_exist_ok=True)
        built = bin_dir / f".{target.name}.{os.getpid()}"  # beside the target: renamed into place whole
        done = subprocess.run(
            [go, "build", "-o", str(built), "."],
            cwd=build,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BuildError(f"building tests/go/{name} failed:\n{done.stderr[-3000:]}")
        os.replace(built, target)
    return target


if __name__ == "__main__":
    try:
        for program in PROGRAMS:
            print(binary(program))
    except BuildError as exc:
        sys.exit(str(exc))
