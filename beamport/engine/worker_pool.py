"""Beam's external SDK worker pool, listening on loopback only.

Beam's own (`apache_beam.runners.worker.worker_pool_main`) listens on every interface. Whoever reaches it can
ask it to start an SDK worker connected to a control service of their choosing, which then runs whatever
bundles that service sends: user code, as this host's workers. The runners that use a pool (Prism in a
Beamport worker, the Flink cluster's TaskManager) are on the same host, so it listens on loopback only.

`python -m beamport.engine.worker_pool --service_port=PORT --container_executable=BOOT` is the pool that
scripts/flink-cluster starts; the Prism engine starts one in its executor with `start`.

With `--spares N` (the Flink cluster's pool: 1) the pool keeps N workers started ahead, each in its sandbox with
Beam imported (about 3 s of a worker's start here), waiting for the endpoints of the worker it is to become:
a spare takes a StartWorker's place at once, and another is started REPLENISH_AFTER_S later (its import would
take the CPU the job's first bundles need then). A spare is beamport.engine.sdk_boot
with `--spare_dir` (its own directory, as a worker's; the sandbox leaves it, and nothing else of the pool's,
writable) and reads that worker's flags from its stdin (sdk_boot.read_assignment).

A worker of a Java or Go environment (its parameter `beamport_sdk=java` or `go`: portable.sdk_external_environments)
is a Java SDK harness or the job's Go worker binary: the pool starts the same program with `--sdk=java` or
`--sdk=go` (sdk_boot.run_java_worker, run_go_worker). A pool with spares keeps a JVM warm for the next Java job, as
Beamport's own workers do (engine/java_warm.py): each Java worker is a Java spare (`--sdk=java --spare_dir`) given
its flags on its stdin, the one waiting when there is one; a while after a Java worker has fetched its jars (or when
it ends), the pool copies them (java_warm.WarmJars, only files of that worker's directory) and starts the next Java
spare, whose JVM warms up over the jars the last Java jobs share, in the sandbox, and is taken only by a harness
that has every one of them. A worker's directory (a Java worker's jars, a Python worker's staged files) is removed
when it ends.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from beamport.engine import java_boot, java_warm, portable, sdk_boot
from beamport.files import FilePolicy

log = logging.getLogger(__name__)

REPLENISH_AFTER_S = 10.0  # how long after a spare is taken another is started


def start(container_executable: str, port: int = 0, spares: int = 0, spare_root: str | None = None):
    """A pool whose workers start through `container_executable` (one process each), serving on localhost:PORT
    (0: a free port), with `spares` workers started ahead (their directories under `spare_root`), each replaced
    REPLENISH_AFTER_S after it is taken. Returns its address and its gRPC server (stop it when done)."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import kill_process_gracefully
    from apache_beam.utils import thread_pool_executor

    # As Beam's start(): no limit on pings without data (a worker's streams stay open and idle for long).
    options = [("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)]
    server = grpc.server(thread_pool_executor.shared_unbounded_instance(), options=options)
    address = f"localhost:{server.add_insecure_port(f'localhost:{port}')}"
    pool = _pool_with_spares(container_executable, spares, spare_root)
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.start()

    @atexit.register
    def kill_workers() -> None:
        java_spare = [pool.java_spare.process] if pool.java_spare else []
        for process in [*pool._worker_processes.values(), *pool.spares, *java_spare]:
            kill_process_gracefully(process)

    return address, server


def _pool_with_spares(container_executable: str, spares: int, spare_root: str | None):
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    class Pool(BeamFnExternalWorkerPoolServicer):
        def __init__(self) -> None:
            super().__init__(use_process=True, container_executable=container_executable)
            self.spares: list[Spare] = []
            self._lock = threading.Lock()
            for _ in range(spares):
                self.spares.append(self._spare())
            # The jars of the last Java jobs, and the Java spare whose JVM is warm over those they share.
            self.java = java_warm.WarmJars(java_boot.harness_jars()) if spares else None
            self.java_spare: Spare | None = None
            self._java_lock = threading.Lock()  # who has the Java spare
            self._keep_lock = threading.Lock()

        def _spare(self, *flags: str, directory: str | None = None) -> Spare:
            directory = directory or tempfile.mkdtemp(prefix="spare-", dir=spare_root)
            command = [container_executable, f"--spare_dir={directory}", *flags]
            process = _spawned(
                lambda: subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,  # as Beam's pool: never read (the worker writes to stderr)
                    close_fds=True,
                )
            )
            return Spare(process, directory)

        def _replenish(self) -> None:
            with self._lock:
                if len(self.spares) < spares:
                    self.spares.append(self._spare())

        def StartWorker(self, request, context):
            refused = sdk_boot.bad_worker_id(request.worker_id)
            if refused:  # (anyone on the host may ask: the id names the worker's directory)
                log.warning("refused a worker: %s", refused)
                return beam_fn_api_pb2.StartWorkerResponse(error=refused)
            sdk = request.params.get(portable.SDK_PARAM)
            if sdk == portable.JAVA_SDK and self.java is not None:
                return self._start_java(request)
            if sdk in (portable.JAVA_SDK, portable.GO_SDK):
                return self._start_other_sdk(request, sdk)
            with self._lock:
                spare = None
                while self.spares and spare is None:
                    candidate = self.spares.pop(0)
                    spare = candidate if candidate.process.poll() is None else candidate.remove()
                if spare is not None:
                    # Later: its import would take the CPU the job's first bundles need now.
                    timer = threading.Timer(REPLENISH_AFTER_S, self._replenish)
                    timer.daemon = True
                    timer.start()
            if spare is None or not _assign(spare.process, request):  # none, or it died: a worker started cold
                if spare is not None:
                    spare.remove()
                answer = _spawned(lambda: super(Pool, self).StartWorker(request, context))
                self._remove_when_ended(request.worker_id)
                return answer
            log.info("worker %s: a spare (pid %s)", request.worker_id, spare.process.pid)
            self._worker_processes[request.worker_id] = spare.process
            spare.remove_when_ended()
            return beam_fn_api_pb2.StartWorkerResponse()

        def _remove_when_ended(self, worker_id: str) -> None:
            """The directory of a worker started as `sdk_boot --id` (not a spare) goes when it ends."""
            process = self._worker_processes.get(worker_id)
            if spare_root is not None and isinstance(process, subprocess.Popen):  # (its id checked: StartWorker)
                Spare(process, sdk_boot.worker_directory(spare_root, worker_id)).remove_when_ended()

        def _start_java(self, request):
            """A Java SDK harness: the waiting Java spare (its JVM warm), else a Java spare started for it now."""
            with self._java_lock:
                spare, self.java_spare = self.java_spare, None
            if spare is not None and _assign(spare.process, request):
                log.info("worker %s: the Java spare (pid %s)", request.worker_id, spare.process.pid)
            else:
                if spare is not None:
                    log.warning("the Java spare (pid %s) ended (%s)", spare.process.pid, spare.process.poll())
                    spare.remove()
                spare = self._java_spare(None)
                if not _assign(spare.process, request):
                    spare.remove()
                    raise RuntimeError(f"the Java SDK worker {request.worker_id} ended as it started")
                log.info("worker %s: a Java SDK worker (pid %s)", request.worker_id, spare.process.pid)
            self._worker_processes[request.worker_id] = spare.process
            threading.Thread(target=self._after_java, args=(spare,), daemon=True).start()
            return beam_fn_api_pb2.StartWorkerResponse()

        def _after_java(self, worker: Spare) -> None:
            """Once a Java worker has fetched its jars (its spec written) and ran REPLENISH_AFTER_S (its JVM's start
            is not slowed by the copies), or ended: keep its jars and warm the next Java spare over them. Its
            directory goes when it ends."""
            spec = Path(worker.directory) / sdk_boot.JAVA_SPEC_FILE
            try:
                while worker.process.poll() is None and not spec.exists():
                    time.sleep(0.5)
                try:
                    worker.process.wait(timeout=REPLENISH_AFTER_S)
                except subprocess.TimeoutExpired:
                    pass
                self._warm_java(spec)
                worker.process.wait()
            except Exception:  # the next Java job starts its JVM itself
                log.exception("no warm JVM for the next Java job")
            finally:
                worker.remove()

        def _warm_java(self, spec: Path) -> None:
            """Copy the jars a Java worker's spec names (written in its sandbox: only regular files of its own
            directory are taken) and start a Java spare warm over what the last Java jobs share, unless one is."""
            assert self.java is not None
            try:
                class_path = json.loads(spec.read_text())["class_path"]
            except (OSError, ValueError, KeyError, TypeError):
                return
            if not isinstance(class_path, list) or not all(isinstance(path, str) for path in class_path):
                return
            with self._keep_lock:  # one worker's jars at a time; the only one to set a Java spare
                self.java.keep(class_path, FilePolicy([spec.parent], []))
                jars = self.java.class_path()
                with self._java_lock:
                    waiting = self.java_spare
                    if waiting is not None and waiting.process.poll() is None and waiting.class_path == jars:
                        return  # warm over these jars already
                    self.java_spare = None
                if waiting is not None:
                    waiting.remove()
                warm = java_warm.warm_spec(jars)
                if warm is None:
                    return
                spare = self._java_spare(warm)
                log.info("a Java spare (pid %s), its JVM warm over %d jars", spare.process.pid, len(jars))
                with self._java_lock:
                    self.java_spare = spare

        def _java_spare(self, warm: dict | None) -> Spare:
            """A Java spare, its JVM started ahead as `warm` says (java_warm.warm_spec), or none."""
            directory = tempfile.mkdtemp(prefix="java-", dir=spare_root)
            if warm is not None:
                Path(directory, sdk_boot.WARM_JVM_FILE).write_text(json.dumps(warm))
            spare = self._spare(f"--{sdk_boot.SDK_FLAG}={portable.JAVA_SDK}", directory=directory)
            spare.class_path = warm["class_path"] if warm else None
            return spare

        def _start_other_sdk(self, request, sdk: str):
            """A Go worker, or a Java SDK harness of a pool without spares: the boot program in that SDK's mode."""
            flags = [f"--{name}={url}" for name, url in _endpoints(request).items()]
            command = [container_executable, f"--{sdk_boot.SDK_FLAG}={sdk}", f"--id={request.worker_id}"]
            log.info("worker %s: a %s SDK worker", request.worker_id, sdk)
            # As Beam's pool: stdout piped and never read (the boot program writes to stderr).
            process = _spawned(lambda: subprocess.Popen([*command, *flags], stdout=subprocess.PIPE, close_fds=True))
            self._worker_processes[request.worker_id] = process
            self._remove_when_ended(request.worker_id)
            return beam_fn_api_pb2.StartWorkerResponse()

    return Pool()


# The one thread that starts the pool's workers. A sandbox (bwrap's --die-with-parent: PR_SET_PDEATHSIG) is killed
# when the *thread* that started it ends, not its process: a Java spare started by the thread that waited for the
# worker before it was killed as that worker ended.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
T = TypeVar("T")


def _spawned(start: Callable[[], T]) -> T:
    """`start()`, which starts a worker process, in the spawning thread."""
    return _SPAWNER.submit(start).result()


@dataclass
class Spare:
    """A worker of the pool (a spare, or a worker started for a request): its process, its directory, and for a
    Java spare the class path of its warm JVM (None: none, or a spare started for a worker at once)."""

    process: subprocess.Popen
    directory: str
    class_path: list[dict] | None = None

    def remove(self) -> None:
        """Kill it (its sandbox, JVM and all) if it runs, and remove its directory."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def remove_when_ended(self) -> None:
        """Remove its directory once it has ended (in a thread of its own, which only waits)."""

        def wait_then_remove() -> None:
            self.process.wait()
            self.remove()

        threading.Thread(target=wait_then_remove, name="remove-worker-dir", daemon=True).start()


def _assign(spare: subprocess.Popen, request) -> bool:
    """Give a spare the flags of the worker it is to become (sdk_boot.read_assignment); False if it died."""
    assignment = {"id": request.worker_id, **_endpoints(request)}
    try:
        assert spare.stdin is not None
        spare.stdin.write(json.dumps(assignment).encode() + b"\n")
        spare.stdin.close()
    except OSError:
        return False
    return True


def _endpoints(request) -> dict[str, str]:
    """The endpoints a StartWorkerRequest gives, by the names of the flags a worker is started with (sdk_boot)."""
    return {name: getattr(request, name).url for name in sdk_boot.ASSIGNED if name != "id"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service_port", type=int, required=True, help="the port to serve on, on loopback")
    parser.add_argument("--container_executable", required=True, help="the program that starts one SDK worker")
    parser.add_argument("--spares", type=int, default=0, help="workers kept started ahead (sdk_boot's)")
    parser.add_argument("--spare_root", default=None, help="where spares' directories go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    address, server = start(args.container_executable, args.service_port, args.spares, args.spare_root)
    log.info("SDK worker pool at %s, starting workers with %s", address, args.container_executable)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
