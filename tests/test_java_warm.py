"""Warm JVMs (engine/java_warm.py): which jars a worker keeps a JVM warm over, and which jobs may take it. The JVM
itself, taken by a real Java job, is tests/test_java.py's test_a_second_java_job_runs_in_the_jvm_its_worker_kept_warm.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from beamport.engine import java_boot, java_warm
from beamport.files import FilePolicy


@pytest.fixture
def warm_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "warm"
    monkeypatch.setattr(java_warm, "WARM_DIR", directory)
    return directory


def jar(path: Path, content: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)


def library(path: Path, content: str) -> str:
    """A jar holding Beam's harness (a warm JVM must have it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(java_warm.HARNESS_CLASS, content)
    return str(path)


def contents(class_path: list[dict]) -> list[str]:
    def content(path: str) -> str:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.read(java_warm.HARNESS_CLASS).decode()
        return Path(path).read_text()

    return [content(entry["path"]) for entry in class_path]


def test_a_warm_jvm_gets_the_jars_a_program_shares_with_its_earlier_jobs(tmp_path, warm_dir):
    harness = jar(tmp_path / "jamm.jar", "jamm")
    jars = java_warm.WarmJars([harness])
    files = FilePolicy([tmp_path / "staging"])
    lib = library(tmp_path / "staging" / "lib.jar", "lib")
    app1, app2 = (jar(tmp_path / "staging" / f"{n}.jar", n) for n in ("app1", "app2"))
    outside = jar(tmp_path / "elsewhere" / "secret.jar", "secret")

    assert jars.class_path() == []  # no Java job yet: no warm JVM
    jars.keep([app1, lib, outside], files)
    first = jars.class_path()
    # The harness's jars first; then the job's, copied by content; never a file its policy does not allow.
    assert contents(first) == ["jamm", "app1", "lib"]
    assert all(e["path"].startswith(str(warm_dir)) for e in first[1:])
    assert {stat.S_IMODE(os.stat(e["path"]).st_mode) for e in first[1:]} == {0o444}  # read-only copies
    # The program rebuilt: its own jar is new, its library is not.
    jars.keep([app2, lib], files)
    assert contents(jars.class_path()) == ["jamm", "lib"]
    # Jobs staged without Beam's harness (a fat jar gone wrong) give a JVM that could not run one: none.
    jars.keep([app2], files)
    assert jars.class_path() == []
    jars.keep([app2], files)
    # A good job after them: its own jars, all of them (what it shares with them lacks the harness).
    jars.keep([app2, lib], files)
    assert contents(jars.class_path()) == ["jamm", "app2", "lib"]


def test_copies_no_java_job_used_for_a_week_are_removed_after_a_java_job(tmp_path, warm_dir):
    """The copies of each build's own jar would otherwise pile up in the cache for good."""
    jars = java_warm.WarmJars([])
    files = FilePolicy([tmp_path / "staging"])
    lib = library(tmp_path / "staging" / "lib.jar", "lib")
    builds = [jar(tmp_path / "staging" / f"app{n}.jar", f"app{n}") for n in range(3)]
    jars.keep([builds[0], lib], files)
    jars.keep([builds[1], lib], files)
    copies = {entry["path"] for entry in jars.class_path()}
    # A week and a day on, with no Java job since: a half-made copy (a worker killed while copying) too.
    week_ago = time.time() - java_warm.UNUSED_FOR_S - 86400
    partial = warm_dir / ".copy-left-behind"
    partial.write_bytes(b"half a jar")
    for copy in warm_dir.iterdir():
        os.utime(copy, (week_ago, week_ago))

    jars.next_prune = 0.0  # a worker looks at most hourly: this one's hour is up
    jars.keep([builds[2], lib], files)
    # The library this job used stays, and its new build; the builds no job used for a week go.
    left = sorted(path.name for path in warm_dir.iterdir())
    assert left == sorted(f"{java_warm.sha256_of(path)}.jar" for path in (lib, builds[2]))
    assert contents(jars.class_path()) == ["lib"] and {e["path"] for e in jars.class_path()} <= copies
    # A week not yet past: nothing goes.
    assert java_warm.prune_unused() == []
    assert sorted(java_warm.prune_unused(now=time.time() + java_warm.UNUSED_FOR_S + 60)) == left


def waiting_jvm(tmp_path, class_path: list[dict], name: str = "jvm") -> tuple[dict, subprocess.Popen]:
    """A warm JVM's directory as `java_warm.start` leaves it (its process: a child that sleeps; its socket: a
    file), and that process."""
    directory = tmp_path / name
    directory.mkdir()
    (directory / java_warm.CLASS_PATH_FILE).write_text(json.dumps(class_path))
    process = subprocess.Popen(["sleep", "60"])
    (directory / "pid").write_text(str(process.pid))
    (directory / "socket").touch()
    return {java_warm.VARIABLE: str(directory)}, process


def test_only_a_job_with_every_jar_of_the_warm_jvm_byte_for_byte_takes_it(tmp_path, monkeypatch):
    lib = jar(tmp_path / "warm" / "lib.jar", "the library")
    environ, jvm = waiting_jvm(tmp_path, [{"path": lib, "sha256": java_warm.sha256_of(lib)}], "jvm1")
    # Same name, other content: a job must not run with a library it did not stage. No launcher of the job can
    # take the JVM (they share its jars): it is stopped, its memory given back.
    forged = jar(tmp_path / "job1" / "lib.jar", "a library of its own")
    app = jar(tmp_path / "job1" / "app.jar", "app")
    assert java_warm.claim([app, forged], environ) is None
    assert not java_warm.claimed(environ)
    assert jvm.wait(timeout=10) == -signal.SIGKILL
    # The same library (under any name): taken, with only the job's own jar to add.
    environ, jvm = waiting_jvm(tmp_path, [{"path": lib, "sha256": java_warm.sha256_of(lib)}], "jvm2")
    same = jar(tmp_path / "job2" / "lib-abc123.jar", "the library")
    taken = java_warm.claim([app, same], environ)
    assert taken == (tmp_path / "jvm2" / "socket.taken", [app])
    assert java_warm.claimed(environ)
    # One job per JVM: a second launcher (another Java environment of the job) starts its own at once.
    started = time.monotonic()
    assert java_warm.claim([app, same], environ) is None
    assert time.monotonic() - started < java_warm.WAIT_S / 2
    assert jvm.poll() is None  # taken, it runs the job's harness
    jvm.kill()
    jvm.wait()
    # A launcher that fetched its jars knows their SHA-256s (sdk_boot.fetch_artifacts): they are not read again.
    environ, jvm = waiting_jvm(tmp_path, [{"path": lib, "sha256": java_warm.sha256_of(lib)}], "jvm3")
    monkeypatch.setattr(java_warm, "sha256_of", lambda path: pytest.fail(f"{path} hashed again"))
    known = {app: "a" * 64, same: digest(same)}
    assert java_warm.claim([app, same], environ, known=known) == (tmp_path / "jvm3" / "socket.taken", [app])
    jvm.kill()
    jvm.wait()


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_worker_compiles_the_warm_harness_once_with_the_jdk_that_runs_it(tmp_path, monkeypatch):
    compiled_dir = tmp_path / "compiled"
    monkeypatch.setattr(java_warm, "COMPILED_DIR", compiled_dir)
    java = java_boot.find_java()
    first = java_warm.compiled(java)
    assert first is not None
    made = Path(first) / "WarmHarness.class"
    assert made.read_bytes()[:4] == b"\xca\xfe\xba\xbe"  # a class file
    when = made.stat().st_mtime_ns
    assert java_warm.compiled(java) == first and made.stat().st_mtime_ns == when  # compiled once
    # A java that cannot compile it: none (the JVM runs the source), and nothing half-built is left.
    assert java_warm.compiled(str(tmp_path / "not-java")) is None
    assert [path.name for path in compiled_dir.iterdir()] == [Path(first).name]
