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

A runner waits for a worker it asked for until the worker connects, for ever (Beam's Flink runner:
ExternalEnvironmentFactory; Prism): one that ends first, in failure (its boot failed, its main session could not be
loaded, it was killed), would hang the job. The pool reads each worker's output (copied to its own stderr) and,
when the worker ends in failure unasked (not by StopWorker), connects in its place and answers the runner's first
instruction with that failure and the worker's last lines (harness_process.answer_in_its_place, as the Java and Go
launchers do for their harnesses): the job fails saying why. A worker that had connected, the runner has seen go.
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

from beamport.engine import harness_process, java_boot, java_warm, portable, sdk_boot
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
        java_spare = [pool.java_spare] if pool.java_spare else []
        for worker in [*pool.workers.values(), *pool.spares, *java_spare]:
            worker.stopped = True
            kill_process_gracefully(worker.process)

    return address, server


def _pool_with_spares(container_executable: str, spares: int, spare_root: str | None):
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    class Pool(BeamFnExternalWorkerPoolServicer):
        def __init__(self) -> None:
            super().__init__(use_process=True, container_executable=container_executable)
            self.spares: list[Spare] = []
            self.workers: dict[str, Spare] = {}  # the workers runners asked for, by id, until they stop them
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
            return _started([container_executable, f"--spare_dir={directory}", *flags], directory, spare=True)

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
                return self._start_cold(request, sdk)
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
            if spare is None or not _assign(spare, request):  # none, or it died: a worker started cold
                if spare is not None:
                    spare.remove()
                return self._start_cold(request, None)
            log.info("worker %s: a spare (pid %s)", request.worker_id, spare.process.pid)
            self.workers[request.worker_id] = spare
            spare.remove_when_ended()
            return beam_fn_api_pb2.StartWorkerResponse()

        def StopWorker(self, request, context):
            """As Beam's pool: the worker is killed unless it ends within a second (the runner has closed its
            streams); an end asked for is no failure to answer for (Spare.follow)."""
            worker = self.workers.pop(request.worker_id, None)
            if worker is not None:
                log.info("stopping worker %s", request.worker_id)
                worker.stop()
            return beam_fn_api_pb2.StopWorkerResponse()

        def _start_cold(self, request, sdk: str | None):
            """A worker started for the request (no Python spare waits; a Go worker; a Java SDK harness of a pool
            without spares): the boot program, in that SDK's mode for another SDK's."""
            flags = [f"--{name}={url}" for name, url in _endpoints(request).items()]
            mode = [f"--{sdk_boot.SDK_FLAG}={sdk}"] if sdk else []
            # Its directory, when the pool knows where the boot program makes it (its id checked: StartWorker).
            directory = sdk_boot.worker_directory(spare_root, request.worker_id) if spare_root is not None else None
            command = [container_executable, *mode, f"--id={request.worker_id}", *flags]
            worker = _started(command, directory, assigned=_Assignment.of(request))
            log.info("worker %s: a %s SDK worker (pid %s)", request.worker_id, sdk or "Python", worker.process.pid)
            self.workers[request.worker_id] = worker
            worker.remove_when_ended()
            return beam_fn_api_pb2.StartWorkerResponse()

        def _start_java(self, request):
            """A Java SDK harness: the waiting Java spare (its JVM warm), else a Java spare started for it now."""
            with self._java_lock:
                spare, self.java_spare = self.java_spare, None
            if spare is not None and _assign(spare, request):
                log.info("worker %s: the Java spare (pid %s)", request.worker_id, spare.process.pid)
            else:
                if spare is not None:
                    log.warning("the Java spare (pid %s) ended (%s)", spare.process.pid, spare.process.poll())
                    spare.remove()
                spare = self._java_spare(None)
                if not _assign(spare, request):
                    spare.remove()
                    raise RuntimeError(f"the Java SDK worker {request.worker_id} ended as it started")
                log.info("worker %s: a Java SDK worker (pid %s)", request.worker_id, spare.process.pid)
            self.workers[request.worker_id] = spare
            threading.Thread(target=self._after_java, args=(spare,), daemon=True).start()
            return beam_fn_api_pb2.StartWorkerResponse()

        def _after_java(self, worker: Spare) -> None:
            """Once a Java worker has fetched its jars (its spec written) and ran REPLENISH_AFTER_S (its JVM's start
            is not slowed by the copies), or ended: keep its jars and warm the next Java spare over them. Its
            directory goes when it ends."""
            assert worker.directory is not None  # (a Java spare's: the pool made it)
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

    return Pool()


# The one thread that starts the pool's workers. A sandbox (bwrap's --die-with-parent: PR_SET_PDEATHSIG) is killed
# when the *thread* that started it ends, not its process: a Java spare started by the thread that waited for the
# worker before it was killed as that worker ended.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
T = TypeVar("T")


def _spawned(start: Callable[[], T]) -> T:
    """`start()`, which starts a worker process, in the spawning thread."""
    return _SPAWNER.submit(start).result()


def _started(
    command: list[str], directory: str | None, spare: bool = False, assigned: _Assignment | None = None
) -> Spare:
    """A worker process, started in the spawning thread; a spare reads its worker's flags on its stdin. Its output
    (stderr too) is read by a thread of its own (Spare.follow), which must know from the start whose worker it is:
    a worker may end before this returns."""
    stdin = subprocess.PIPE if spare else subprocess.DEVNULL
    process = _spawned(
        lambda: subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=True)
    )
    worker = Spare(process, directory, assigned=assigned)
    threading.Thread(target=worker.follow, name="worker-output", daemon=True).start()
    return worker


@dataclass(frozen=True)
class _Assignment:
    """The worker a runner asked for: its id, the runner's control service, and what it runs (for a failure)."""

    worker_id: str
    control_url: str
    who: str

    @classmethod
    def of(cls, request) -> _Assignment:
        sdk = request.params.get(portable.SDK_PARAM)
        names = {portable.JAVA_SDK: "The Java SDK worker", portable.GO_SDK: "The Go worker"}
        who = names.get(sdk, "The Python SDK worker")
        return cls(request.worker_id, request.control_endpoint.url, who)


@dataclass
class Spare:
    """A worker of the pool (a spare, or a worker started for a request): its process, its directory (None: the
    pool does not know it), and for a Java spare the class path of its warm JVM (None: none, or a spare started for
    a worker at once); once it is a runner's worker, which one (None: a spare still); whether the pool or the runner
    ended it."""

    process: subprocess.Popen
    directory: str | None
    class_path: list[dict] | None = None
    assigned: _Assignment | None = None
    stopped: bool = False

    def remove(self) -> None:
        """Kill it (its sandbox, JVM and all) if it runs, and remove its directory."""
        if self.process.poll() is None:
            self.stopped = True
            self.process.kill()
            self.process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def stop(self) -> None:
        """End it as the runner asked (StopWorker): killed unless it ends within a second."""
        self.stopped = True
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove_when_ended(self) -> None:
        """Remove its directory once it has ended (in a thread of its own, which only waits)."""

        def wait_then_remove() -> None:
            self.process.wait()
            self.remove()

        threading.Thread(target=wait_then_remove, name="remove-worker-dir", daemon=True).start()

    def follow(self) -> None:
        """Copy its output to the pool's stderr until it ends. A worker that ended in failure, unasked, may never
        have reached its runner, which then waits for it for ever: answer in its place (harness_process), unless
        its launcher has (a Java or Go harness's: harness_process.ANSWERED_LINE)."""
        assert self.process.stdout is not None
        last, _ = harness_process.follow(self.process.stdout, lambda line: False)
        status = self.process.wait()
        assigned = self.assigned
        if assigned is None or self.stopped or status == 0 or harness_process.ANSWERED_LINE in last:
            return
        why = f"{assigned.who} {assigned.worker_id} exited with status {status} before it reached the runner"
        log.warning("%s", why)
        details = ":\n" + "\n".join(last) if last else "."
        harness_process.answer_in_its_place(assigned.control_url, assigned.worker_id, why + details)


def _assign(spare: Spare, request) -> bool:
    """Give a spare the flags of the worker it is to become (sdk_boot.read_assignment); False if it died."""
    if spare.process.poll() is not None:
        return False
    spare.assigned = _Assignment.of(request)
    assignment = {"id": request.worker_id, **_endpoints(request)}
    try:
        assert spare.process.stdin is not None
        spare.process.stdin.write(json.dumps(assignment).encode() + b"\n")
        spare.process.stdin.close()
    except OSError:
        spare.stopped = True  # (another worker takes its place, under its id)
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
