"""`jobMetadata.sdkVersion`: the SDK a job was submitted with, as Dataflow fills it on jobs.create.

Dataflow reads it from the submission's `environment.userAgent`, which every Beam SDK sends: Python
`{"name": "Apache Beam Python 3.12 SDK", "version": "2.77.0"}` (older ones "Apache Beam SDK for Python"),
Java `{"name": "Apache Beam SDK for Java", "version": ...}` (and more keys), Go `{"name": "Apache Beam SDK for
Go", ...}`. It answers `{"version", "versionDisplayName": "Apache Beam SDK for Python", "sdkSupportStatus"}`.
Beamport's support status is its own: SUPPORTED for the Python SDK of the Beam version its engines run,
UNKNOWN for anything else (it may run, and the job's log says so when the versions differ).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

SUPPORTED = "SUPPORTED"
UNKNOWN = "UNKNOWN"
_LANGUAGES = ("Python", "Java", "Go")


def fill_sdk_version(doc: dict) -> None:
    """Set the job document's `jobMetadata.sdkVersion` from its user agent; one the client sent stays."""
    metadata = doc.get("jobMetadata") or {}
    if metadata.get("sdkVersion"):
        return
    version = sdk_version((doc.get("environment") or {}).get("userAgent") or {})
    if version is not None:
        doc["jobMetadata"] = {**metadata, "sdkVersion": version}


def sdk_language(doc: dict) -> str | None:
    """The Beam SDK a job was submitted with, from its user agent: "python", "java", "go" (the registry's
    names), None when the user agent names no Beam SDK."""
    name = ((doc.get("environment") or {}).get("userAgent") or {}).get("name")
    if not isinstance(name, str) or "Beam" not in name:
        return None
    return next((lang.lower() for lang in _LANGUAGES if re.search(rf"\b{lang}\b", name)), None)


def sdk_version(user_agent: dict) -> dict | None:
    name, version = user_agent.get("name"), user_agent.get("version")
    if not isinstance(version, str) or not version or not isinstance(name, str) or not name:
        return None
    language = next((lang for lang in _LANGUAGES if re.search(rf"\b{lang}\b", name)), None)
    beam = "Beam" in name and language is not None
    runs = beam and language == "Python" and version == beam_version()
    return {
        "version": version,
        "versionDisplayName": f"Apache Beam SDK for {language}" if beam else name,
        "sdkSupportStatus": SUPPORTED if runs else UNKNOWN,
    }


@functools.cache
def beam_version() -> str | None:
    """The version of the Beam that Beamport's engines run (read without importing Beam: that takes seconds)."""
    try:
        return importlib.metadata.version("apache-beam")
    except importlib.metadata.PackageNotFoundError:
        return None
