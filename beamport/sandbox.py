"""User code in a sandbox: every process that runs a pipeline (a worker's executor, with the SDK workers and
runners it starts) or a flex template's launcher runs under bubblewrap (Debian's `bubblewrap`).

Inside: a user namespace in which the process is uid 65534 with no capabilities; new PID, IPC and UTS
namespaces (killing the sandbox kills everything in it); the whole system read-only; a fresh /tmp as the
run's scratch; the operator's allowed roots writable; Beamport's own files (keys, database, kept pipelines,
worker logs) replaced by empty mounts; an environment holding only what a run needs; and the operator's
resource limits (memory, open files, processes) through prlimit. The network is shared: runs talk to the
service, to the engines and to GCS or other endpoints the operator configured. docs/security.md says what
this does and does not protect.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

AUTO, REQUIRED, OFF = "auto", "required", "off"
MODES = (AUTO, REQUIRED, OFF)
NOBODY = 65534
# What a run keeps of its parent's environment: locale and paths, and the emulators' endpoints. (Beamport's own
# settings reach the executor in its assignment, not through the environment.)
KEPT_VARIABLES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "JAVA_HOME",
        "GOPATH",
        "GOBIN",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
    }
)
KEPT_PREFIXES = (
    "LC_",
    "STORAGE_EMULATOR_HOST",
    "PUBSUB_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "GOOGLE_API_GATEWAY",  # the Google API gateway (beamport/google_gateway.py), for Go workers
)


# In Beamport's cache, the copies of Java jobs' jars that warm JVMs run over (engine/java_warm.py): hidden from
# every run, which sees only those its own warm JVM was started over (Sandbox.command's `readable`).
WARM_JARS = Path.home() / ".cache" / "beamport" / "java" / "warm"


def _beamports_own_code() -> list[Path]:
    """Beamport's package, the Python environment it runs from, and its cache (the binaries it built, the jars
    of warm JVMs: engine/java_warm.py): never writable by user code."""
    import beamport

    own = [Path(beamport.__file__).resolve().parent, Path(sys.prefix).resolve()]
    cache = (Path.home() / ".cache" / "beamport").resolve()
    return [*own, cache] if cache.is_dir() else own


class SandboxUnavailable(Exception):
    """--sandbox required, and no sandbox can be made here (the message says why)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (None: the system's)."""

    memory_bytes: int | None = None
    open_files: int | None = None
    processes: int | None = None

    def prlimit(self) -> list[str]:
        flags = [
            f"--as={self.memory_bytes}" if self.memory_bytes else "",
            f"--nofile={self.open_files}" if self.open_files else "",
            f"--nproc={self.processes}" if self.processes else "",
        ]
        flags = [f for f in flags if f]
        return ["prlimit", *flags, "--"] if flags else []

    def flags(self) -> list[str]:
        """The same limits as `beamport worker` flags."""
        return [
            *(["--job-memory", str(self.memory_bytes)] if self.memory_bytes else []),
            *(["--job-open-files", str(self.open_files)] if self.open_files else []),
            *(["--job-processes", str(self.processes)] if self.processes else []),
        ]


def parse_size(text: str | None) -> int | None:
    """'4G', '512M', '1048576' as bytes (None for None or '')."""
    if not text:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    return int(float(number) * factor)


class Sandbox:
    def __init__(
        self,
        mode: str = AUTO,
        writable=(),
        hidden=(),
        limits: Limits = Limits(),
        shared=(),
        scratch=(),
        read_only=(),
    ):
        """`writable`: directories bound writable when they exist (a hidden path inside one stays hidden);
        `shared`: directories the run shares with processes outside it (e.g. Flink's drain signals), created if
        missing so that they are bound; `scratch`: the run's own directories, bound writable even inside a hidden
        path (an SDK worker's, inside its Flink cluster's directory) or a read-only one; `read_only`: paths
        read-only even inside a writable one (a Flink cluster's directory, for its own processes)."""
        if mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.shared = [Path(p) for p in shared]
        self.writable = [*(Path(p) for p in writable), *self.shared]
        self.hidden = [Path(p) for p in hidden]
        self.scratch = [Path(p) for p in scratch]
        self.read_only = [Path(p) for p in read_only]
        self.limits = limits

    @functools.cached_property
    def unavailable(self) -> str | None:
        """Why no sandbox can be made here (None: it can)."""
        if self.mode == OFF:
            return "the sandbox is turned off (--sandbox off)"
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
        if self.limits.prlimit() and shutil.which("prlimit") is None:
            return "prlimit (util-linux) is not installed, and resource limits were asked for"
        probe = subprocess.run(
            [bwrap, *self._namespaces(), "--ro-bind", "/", "/", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode != 0:
            return f"bubblewrap cannot make a sandbox here: {probe.stderr.strip() or probe.returncode}"
        return None

    @property
    def enabled(self) -> bool:
        return self.unavailable is None

    def require(self) -> None:
        """Raise SandboxUnavailable if the operator required a sandbox and none can be made."""
        if self.mode == REQUIRED and self.unavailable:
            raise SandboxUnavailable(f"--sandbox required, but {self.unavailable}.")

    def describe(self) -> str:
        if self.enabled:
            limits = " ".join(self.limits.prlimit()[1:-1]) or "no resource limits"
            return (
                f"user code runs in a bubblewrap sandbox (uid {NOBODY}, no capabilities, system read-only, "
                f"writable: {', '.join(map(str, [*self.writable, *self.scratch])) or 'nothing'}; {limits})"
            )
        return f"user code runs WITHOUT a sandbox, as uid {os.getuid()}: {self.unavailable}"

    def command(
        self,
        argv: list[str],
        set_env: Mapping[str, str] | None = None,
        files: Mapping[str, Path] | None = None,
        cwd: str | None = None,
        readable: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> list[str]:
        """`argv` to run inside the sandbox (unchanged when there is none), in an environment of what a run keeps
        of this process's, plus `set_env`; `files` are host files (a credential) made readable inside at the
        given paths under /tmp; `readable` host files shown read-only where they are, even where hidden (the
        jars of the run's warm JVM, in WARM_JARS). `die_with_parent` False: the sandbox outlives the thread that
        starts it (a service started by a script that then exits: scripts/flink-cluster)."""
        if not self.enabled:
            return argv
        for path in self.shared:
            path.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k in KEPT_VARIABLES or k.startswith(KEPT_PREFIXES)}
        env.update(set_env or {})
        args = [
            "bwrap",
            *self._namespaces(die_with_parent),
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        for path in self.writable:
            if path.exists():
                args += ["--bind", str(path), str(path)]
        for path in [*_beamports_own_code(), *self.read_only]:  # read-only even inside a writable root
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hidden:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(path)]
        if WARM_JARS.is_dir():
            args += ["--tmpfs", str(WARM_JARS.resolve())]
        for host_file in readable:
            args += ["--ro-bind-try", host_file, host_file]  # (a copy pruned since: not there, as in the cache)
        for path in self.scratch:
            args += ["--bind", str(path), str(path)]
        for inside, host in (files or {}).items():
            args += ["--ro-bind", str(host), inside]
        args += ["--clearenv", "--setenv", "HOME", "/tmp", "--chdir", cwd or "/tmp"]
        for key, value in sorted(env.items()):
            args += ["--setenv", key, value]
        return [*args, "--", *self.limits.prlimit(), *argv]

    @staticmethod
    def _namespaces(die_with_parent: bool = True) -> list[str]:
        return [
            "--unshare-user",
            "--uid",
            str(NOBODY),
            "--gid",
            str(NOBODY),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--cap-drop",
            "ALL",
            *(["--die-with-parent"] if die_with_parent else []),
            "--new-session",
        ]
