"""Checks of what DataflowRunner staged that need no Beam: the server makes them when a job is created (it
never imports Beam), and staging.py again when a worker stages the job to run it.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

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
