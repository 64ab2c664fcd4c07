"""Checks of what DataflowRunner staged that need no Beam: the server makes them when a job is created (it
never imports Beam), and staging.py again when a worker stages the job to run it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from beamport.errors import ApiError


def check_pipeline_hash(pipeline_bytes: bytes, options: dict) -> None:
    """Refuse a staged pipeline that is not the one submitted (DataflowRunner sends its SHA-256): with a local
    staging location, every submission writes the same pipeline.pb, so a later one can replace an earlier's."""
    expected = options.get("pipelineProtoHash")
    if expected and hashlib.sha256(pipeline_bytes).hexdigest() != expected:
        raise ApiError(
            "FAILED_PRECONDITION",
            f"The pipeline staged at {options.get('pipelineUrl')} is not the one this job was submitted with (its "
            "SHA-256 differs from pipelineProtoHash): a later submission with the same staging location replaced "
            "it. Give each job a staging location of its own.",
        )


def unsatisfied_requirements(text: str) -> list[str]:
    """The requirement lines of a requirements file that the installed distributions do not satisfy."""
    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            missing.append(line)  # pip options, URLs, editable installs: nothing we can check
            continue
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{line} (installed: {version})")
    return missing


# A package's build runs its setup.py (user code, inside the executor's sandbox); one that takes this long is stuck.
BUILD_TIMEOUT_S = 300.0


class BuildFailed(Exception):
    """A staged source package that could not be built into a wheel (the message says why, in pip's words)."""


def build_wheel(source: Path, into: Path) -> Path:
    """A wheel built from a staged source package (an sdist, or --setup_file's workflow.tar.gz), as Beam's SDK
    container installs one with pip: here offline (--no-index: nothing is downloaded), without build isolation
    (the build uses this environment's pinned setuptools) and without dependencies (requires_dist says what the
    package would want). `into` must be a directory of this package's own."""
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    command += ["--no-cache-dir", "--disable-pip-version-check", "--quiet", "--wheel-dir", str(into), str(source)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=into)
    except subprocess.TimeoutExpired:
        raise BuildFailed(f"its build took more than {BUILD_TIMEOUT_S:.0f} s") from None
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        said = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise BuildFailed(" / ".join(said[-6:]) or f"pip exited with {done.returncode}")
    return wheels[0]


def requires_dist(wheel: Path) -> list[str]:
    """A wheel's Requires-Dist lines (its METADATA), as requirement strings."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = archive.read(name).decode("utf-8", errors="replace")
    header = text.split("\n\n", 1)[0]
    return [line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("Requires-Dist:")]


def is_pure_wheel(filename: str) -> bool:
    """A wheel with no compiled code: importable as it is, from the zip, on any machine (`py3-none-any`)."""
    return filename.endswith(".whl") and os.path.basename(filename).rsplit("-", 3)[-2:] in (["none", "any.whl"],)
