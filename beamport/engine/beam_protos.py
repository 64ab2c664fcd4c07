"""Beam's generated protos (`apache_beam.portability.api`, `common_urns`) for a launcher that never runs Beam's
Python SDK: a Java or Go harness's (engine/java_boot.py, engine/go_boot.py, sdk_boot's Java and Go workers).

Importing any module of apache_beam runs the package's __init__, which imports the whole SDK: about 2 s of each
harness's start here (1.8 CPU-s), for a launcher that needs only the Fn API's messages and stubs (0.2 s).
`without_sdk()` lets this process import apache_beam's modules without that __init__. Only a process that will
never run Python SDK code may call it (the SDK's modules assume their package's __init__ ran), and it must call
it before anything imports apache_beam; in a process that has imported apache_beam already it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types

PACKAGE = "apache_beam"


def without_sdk() -> None:
    """From now on, apache_beam's modules import without the package's __init__ (so without the SDK)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running it
    if spec is None or spec.submodule_search_locations is None:
        return  # no Beam here: an import of its protos fails as it would have
    package = types.ModuleType(PACKAGE, "apache_beam's modules, without the SDK its __init__ imports")
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    sys.modules[PACKAGE] = package


def sdk_imported() -> bool:
    """Whether this process has imported Beam's Python SDK (its package's __init__ ran): a launcher's test."""
    package = sys.modules.get(PACKAGE)
    return package is not None and hasattr(package, "Pipeline")
