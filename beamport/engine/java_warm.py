"""Warm Java SDK harnesses: a JVM started ahead of its job, so that a Java job on the embedded engine does not wait
for a JVM's start (about 3.5 s here, 2 s of it Beam's PipelineOptionsFactory validating every options interface of
the class path by reflection, which every Beam Java program pays for at start).

Three parts, in three processes:
- The worker (outside the sandbox), after a Java job's work item (`WarmJars.keep`): copies the jars the job ran
  with (those its file policy allows, regular files) into WARM_DIR, by content (their SHA-256), where no job may
  write (the sandbox binds it read-only); the class path of the next warm JVM is the jars of this job that one of
  the two before it had too: a program's libraries, not its own jar, which changes with each build (all of this
  job's when those lack Beam's harness: after the first job, or after jobs staged without it).
- The worker's standby executor (inside the sandbox the job will get, before any job is known: `start`) starts
  `java -cp JAMM:THOSE:CLASSES WarmHarness SOCKET` (engine/java/WarmHarness.java, which the worker compiles once
  with the JDK's compiler, `compiled`; without a JDK no JVM starts warm), which loads Beam's harness and
  PipelineOptionsFactory's registry and waits.
- The job's launcher (engine/java_boot.py, started by FnApiRunner, or by Prism under the executor: `claim`,
  `run`) hashes its own class path. Only if every jar of the warm JVM's class path is one of its own, byte for
  byte, does it take the JVM: it sends the harness's environment and the rest of its jars (which the JVM loads in
  a class loader of their own, over its class path), and follows its output and exit as it would a JVM it
  started. Otherwise, or when there is no warm JVM, it starts one (the cold path). A job thus runs only the code
  it staged; what differs from a cold JVM is the class loaders: a class found both in the job's own jars and in a
  shared library comes from the library.

One job per warm JVM; it dies with its executor, and with its launcher once taken.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

from beamport.engine import harness_process
from beamport.processes import die_with_parent
from beamport.sandbox import WARM_JARS

log = logging.getLogger(__name__)

WARM_DIR = WARM_JARS  # the jars of warm JVMs, by content (hidden from sandboxes but for a warm JVM's own)
COMPILED_DIR = Path.home() / ".cache" / "beamport" / "java" / "warm-harness"  # WarmHarness.class, per source and JDK
SOURCE = Path(__file__).parent / "java" / "WarmHarness.java"
VARIABLE = "BEAMPORT_WARM_JVM"  # in an executor's environment: its warm JVM's directory
CLAIMED = "claimed"  # the file java_boot writes in that directory when it takes the JVM
WAIT_S = 15.0  # how long a launcher waits for a warm JVM still warming up (a cold start takes about 3.5 s more)
CLASS_PATH_FILE = "class-path.json"
SOCKET_PATH_MAX = 104  # the longest path a Unix socket may have (108 bytes with its NUL, less on some systems)
HARNESS_CLASS = "org/apache/beam/fn/harness/FnHarness.class"
# What a worker copies of one job (its executor says which jars: a bound on what a job could make it copy).
MAX_JARS = 2000
MAX_JAR_BYTES = 512 << 20
# A copy no Java job used for this long is removed (a developer's jar of each build would otherwise stay for good);
# each worker looks at most this often, after a Java job.
UNUSED_FOR_S = 7 * 86400
PRUNE_EVERY_S = 3600


def sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


# -- the worker: which jars a warm JVM gets ---------------------------------------------------------------


class WarmJars:
    """A worker's memory of the jars of its last two Java jobs, and their copies in WARM_DIR."""

    def __init__(self, harness_jars: list[str]):
        self.harness_jars = harness_jars  # Beamport's own (jamm): first on every Java harness's class path
        self.known: dict[tuple, str] = {}  # (path, size, mtime, inode) -> SHA-256 of a copied jar
        self.jobs: collections.deque[list[str]] = collections.deque(maxlen=3)  # their jars' SHA-256s, in order
        self.harness_in: dict[str, bool] = {}  # whether a copied jar holds Beam's harness
        self.next_prune = 0.0  # time.monotonic() of the next look for unused copies

    def keep(self, class_path: list[str], files) -> None:
        """Copy a Java job's staged jars (`class_path`, as its executor said: checked here against the file
        policy `files`, as the job itself was) into WARM_DIR, and remember them."""
        shas: list[str] = []
        known: dict[tuple, str] = {}
        for location in class_path:
            if len(shas) >= MAX_JARS:
                break
            try:
                with files.open_read(location) as source:
                    stat = os.fstat(source.fileno())
                    if stat.st_size > MAX_JAR_BYTES:
                        continue
                    key = (location, stat.st_size, stat.st_mtime_ns, stat.st_ino)
                    sha = self.known.get(key)
                    if not sha or not _used(WARM_DIR / f"{sha}.jar"):  # new, changed, or its copy removed
                        sha = _copy(source)
            except Exception:  # not a file the job may read: no warm JVM gets it
                continue
            known[key] = sha
            shas.append(sha)
        self.known = known  # what the latest job had: a jar changed since is hashed (and copied) again
        self.jobs.append(shas)
        if time.monotonic() >= self.next_prune:
            self.next_prune = time.monotonic() + PRUNE_EVERY_S
            prune_unused()

    def class_path(self) -> list[dict]:
        """The next warm JVM's class path: the harness's jars, then the latest Java job's jars that one of the two
        jobs before it had too (all of its jars when those lack Beam's harness, as after the first job). Empty when
        this worker ran no Java job, or none with Beam's harness."""
        if not self.jobs:
            return []
        *earlier, latest = self.jobs
        shared = {sha for jars in earlier for sha in jars}
        chosen = [sha for sha in dict.fromkeys(latest) if sha in shared]
        if not any(map(self._has_harness, chosen)):  # the first job, or one after jobs that lacked Beam's harness
            chosen = list(dict.fromkeys(latest))
        if not any(map(self._has_harness, chosen)):  # a JVM that could not run a harness: none
            return []
        harness: list[dict] = [{"path": path, "sha256": sha256_of(path)} for path in self.harness_jars]
        copies: list[dict] = [{"path": str(WARM_DIR / f"{sha}.jar"), "sha256": sha} for sha in chosen]
        # A jar not there (a cache cleaned since) would be missing from the JVM, yet left out of the job's own jars.
        return [jar for jar in [*harness, *copies] if jar["sha256"] and Path(jar["path"]).is_file()]

    def _has_harness(self, sha: str) -> bool:
        """Whether the copied jar holds Beam Java's SDK harness (a warm JVM must have it, to load it)."""
        if sha not in self.harness_in:
            try:
                with zipfile.ZipFile(WARM_DIR / f"{sha}.jar") as jar:
                    self.harness_in[sha] = HARNESS_CLASS in jar.namelist()
            except (OSError, zipfile.BadZipFile):
                self.harness_in[sha] = False
        return self.harness_in[sha]


def _used(copy: Path) -> bool:
    """Mark a copy used now (its modification time: copies are never written); whether it is there."""
    try:
        os.utime(copy)
        return True
    except OSError:
        return False


def prune_unused(now: float | None = None) -> list[str]:
    """Remove the copies in WARM_DIR that no Java job used for UNUSED_FOR_S (of any worker of this host: `keep` marks
    each it uses), and partial copies as old; return their names. A warm JVM has opened every jar of its class path
    while it warmed up (Beam's options registry reads each), so removing one it runs over changes nothing for it."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(WARM_DIR))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.endswith(".jar") or entry.name.startswith(".copy-")):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime > UNUSED_FOR_S:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:  # gone already (another worker's look), or not ours to remove
            continue
    if removed:
        log.info(
            "removed %d copies of jars that no Java job used for %d days from %s",
            len(removed),
            UNUSED_FOR_S // 86400,
            WARM_DIR,
        )
    return removed


def _copy(source) -> str:
    """Copy an open file into WARM_DIR under its SHA-256 (unless a copy is there: read once, then, as a pool's
    workers' jars are, each in a directory of its own); that SHA-256."""
    WARM_DIR.mkdir(parents=True, exist_ok=True)
    sha = hashlib.file_digest(source, "sha256").hexdigest()
    target = WARM_DIR / f"{sha}.jar"
    if _used(target):  # another worker's copy, or one this worker forgot
        return sha
    source.seek(0)
    with tempfile.NamedTemporaryFile(dir=WARM_DIR, prefix=".copy-", delete=False) as copy:
        try:
            digest = hashlib.sha256()
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                copy.write(chunk)
            copy.flush()
            if digest.hexdigest() != sha:  # changed while it was read: not what the job ran
                raise OSError(f"{source.name} changed while it was copied")
            os.chmod(copy.name, 0o444)
            os.replace(copy.name, target)
        except BaseException:
            Path(copy.name).unlink(missing_ok=True)
            raise
    return sha


# -- the standby executor: the JVM ------------------------------------------------------------------------


def compiled(java: str) -> str | None:
    """The directory of WarmHarness.class, compiled by `java`'s JDK once (per source and JDK) into
    COMPILED_DIR, where no job may write; None if it cannot be (the JVM then runs the source itself). Run by the
    worker, outside the sandbox. A compiled class starts the JVM in 3.4 s and 6 CPU-s, against 5 s and 9.5 for the
    source-file mode, which compiles it at every start."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + os.path.realpath(java).encode()).hexdigest()[:16]
    directory = COMPILED_DIR / key
    if (directory / "WarmHarness.class").is_file():
        return str(directory)
    COMPILED_DIR.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=COMPILED_DIR, prefix=".compiling-"))
    try:
        # The JDK's own compiler module, run by the same `java`: its class file is one this JVM can load.
        compiler = [java, "-m", "jdk.compiler/com.sun.tools.javac.Main", "-d", str(building), str(SOURCE)]
        done = subprocess.run(compiler, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not (building / "WarmHarness.class").is_file():
            raise subprocess.SubprocessError(done.stderr[-2000:])
        os.chmod(building, 0o755)
        try:
            os.rename(building, directory)
        except OSError:  # another worker's compile got there first
            if not (directory / "WarmHarness.class").is_file():
                raise
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("WarmHarness.java did not compile (the warm JVM runs its source): %s", exc)
        return None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return str(directory)


def start(class_path: list[dict], java: str, classes: str | None = None, parent: str | None = None) -> subprocess.Popen:
    """Start a warm JVM over `class_path` (WarmJars.class_path) in this process, which it dies with; its
    directory (in `parent`, else in the temporary directory) goes in this process's environment (VARIABLE), for the
    launchers of the job's harnesses. `classes`: WarmHarness.class's directory (`compiled`), else the JVM runs
    WarmHarness.java."""
    from beamport.engine.java_boot import argfile_quoted, jvm_arguments

    if parent and len(os.path.join(parent, "beamport-warm-jvm-12345678", "socket.taken")) > SOCKET_PATH_MAX:
        parent = None
    directory = Path(tempfile.mkdtemp(prefix="beamport-warm-jvm-", dir=parent))
    (directory / CLASS_PATH_FILE).write_text(json.dumps(class_path))
    args_file = directory / "class-path.args"
    entries = [jar["path"] for jar in class_path] + ([classes] if classes else [])
    args_file.write_text("-cp " + argfile_quoted(os.pathsep.join(entries)) + "\n")
    main = "WarmHarness" if classes else str(SOURCE)
    argv = [java, *jvm_arguments(args_file), main, str(directory / "socket")]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    (directory / "pid").write_text(str(process.pid))
    os.environ[VARIABLE] = str(directory)
    return process


def warm_spec(class_path: list[dict]) -> dict | None:
    """What `start_spec` takes for a JVM over `class_path` (WarmJars.class_path) with this host's Java, its
    WarmHarness compiled (by this process: a worker's, a pool's, outside any sandbox); None without either."""
    from beamport.engine.java_boot import JavaUnavailable, find_java

    try:
        java = find_java()
    except JavaUnavailable:
        return None
    return {"java": java, "class_path": class_path, "classes": compiled(java)} if class_path else None


def jar_paths(spec: dict | None) -> list[str]:
    """The jars of the warm JVM `spec` describes (warm_spec; None: no JVM), which its sandbox must show."""
    return [jar["path"] for jar in spec["class_path"]] if spec else []


def start_spec(spec: dict, parent: str | None = None) -> None:
    """`start` as a worker asks for it: {"java": path, "class_path": [...] (WarmJars.class_path), "classes":
    WarmHarness.class's directory or None}. A JVM that cannot start leaves the job to start one of its own."""
    try:
        start(spec["class_path"], spec["java"], spec.get("classes"), parent)
    except (OSError, KeyError, TypeError) as exc:
        log.warning("no warm JVM: %s", exc)


# The job's message when it took its executor's warm JVM.
CLAIMED_RECORD = logging.LogRecord(
    __name__,
    logging.INFO,
    __file__,
    0,
    "The Java SDK harness ran in a JVM this worker started ahead of the job, its classes loaded and Beam's options "
    "registry built (docs/engines.md, warm JVMs).",
    None,
    None,
)


def claimed(environ=os.environ) -> bool:
    """Whether a launcher of this executor's job took its warm JVM."""
    directory = environ.get(VARIABLE)
    return bool(directory) and (Path(directory) / CLAIMED).exists()


# -- the job's launcher: taking the JVM -------------------------------------------------------------------


def claim(class_path: list[str], environ=os.environ, known: dict | None = None) -> tuple[Path, list[str]] | None:
    """This executor's warm JVM, taken for a harness over `class_path`, with the jars it must add (those not on
    its class path already), if it is there and every jar of its class path is one of `class_path`'s, byte for
    byte; else None (the launcher starts a JVM of its own). `known`: the SHA-256s of some of those jars (path ->
    hex), taken as they were fetched; the others are hashed here."""
    directory = environ.get(VARIABLE)
    if not directory or not (Path(directory) / CLASS_PATH_FILE).exists():
        return None
    directory_path = Path(directory)
    warm = json.loads((directory_path / CLASS_PATH_FILE).read_text())
    known = known or {}
    hashes = {path: known.get(path) or sha256_of(path) for path in class_path}
    mine = set(hashes.values())
    if any(jar["sha256"] not in mine for jar in warm):
        _stop(directory_path)  # no launcher of this job can take it (they share its jars): its memory back
        return None
    socket_path = directory_path / "socket"
    if not _ready(socket_path, directory_path):
        return None
    taken = directory_path / "socket.taken"
    try:
        os.rename(socket_path, taken)  # atomic: one launcher takes it
    except FileNotFoundError:
        return None
    (directory_path / CLAIMED).touch()
    on_path = {jar["sha256"] for jar in warm}
    return taken, [path for path in class_path if hashes[path] not in on_path]


def _stop(directory: Path) -> None:
    """Kill the warm JVM of `directory` if no launcher took it."""
    try:
        if not (directory / CLAIMED).exists():
            os.kill(int((directory / "pid").read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def announce(logging_url: str) -> None:
    """Tell the job, through the logging service at `logging_url`, that its harness took a warm JVM (CLAIMED_RECORD):
    for a launcher whose engine does not share its environment to see it (Flink's SDK worker pool)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    entry = beam_fn_api_pb2.LogEntry(
        severity=beam_fn_api_pb2.LogEntry.Severity.INFO,
        message=CLAIMED_RECORD.getMessage(),
        log_location=__name__,
    )
    entry.timestamp.GetCurrentTime()
    with grpc.insecure_channel(logging_url) as channel:
        try:
            stub = beam_fn_api_pb2_grpc.BeamFnLoggingStub(channel)
            for _ in stub.Logging(iter([beam_fn_api_pb2.LogEntry.List(log_entries=[entry])]), timeout=10):
                pass
        except grpc.RpcError as exc:  # the job's logging service gone: nobody to tell
            log.info("could not tell the job that its harness runs in a warm JVM: %s", exc)


def _ready(socket_path: Path, directory: Path) -> bool:
    """Wait (up to WAIT_S) for the warm JVM to be listening; False if it died or was taken, or is not done warming
    up by then."""
    deadline = time.monotonic() + WAIT_S
    try:
        pid = int((directory / "pid").read_text())
    except (OSError, ValueError):
        return False
    while not socket_path.exists():
        if time.monotonic() > deadline or not _alive(pid) or (directory / CLAIMED).exists():
            return False
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run(taken: Path, jars: list[str], env: dict[str, str], control_url: str, worker_id: str) -> None:
    """Run the harness in the warm JVM at `taken` over its class path and `jars`, with `env`; exit with its
    status, having answered the runner in its place if it failed (as harness_process.run does for a JVM of its
    own)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(str(taken))
    lines = [f"launcher\t{os.getpid()}"]
    lines += [f"env\t{_escaped(name)}\t{_escaped(value)}" for name, value in env.items()]
    lines += [f"jar\t{_escaped(path)}" for path in jars]
    connection.sendall(("\n".join([*lines, "run"]) + "\n").encode())
    with connection.makefile("rb") as output:
        last, ended = harness_process.follow(output, lambda line: bool(re.fullmatch(r"exit -?\d+", line)))
    status = int(ended[5:]) if ended else 1  # no status: the JVM went without saying how (killed)
    harness_process.finish(status, last, "The Java SDK harness (a warm JVM)", control_url, worker_id)


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
