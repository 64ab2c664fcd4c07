"""What the embedded engine hands its observer besides stages and metrics: the pipeline's log records,
and the user's error when the pipeline fails."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from google.protobuf import text_format

# Runner-side loggers: their records are about running the pipeline, not from it. The records of SDK
# worker subprocesses arrive through one of them (local_job_service's logging service) and are unpacked.
_RUNNER_LOGGERS = ("apache_beam.runners.portability", "beamport")
_WORKER_LOG_SERVICE = "apache_beam.runners.portability.local_job_service"
_WORKER_LOG_FORMAT = "Worker: %s"


class PipelineLogHandler(logging.Handler):
    """Root-logger handler for the duration of a run: passes the pipeline's records to `deliver`.

    Not the pipeline's: records of the runner and of Beamport, and, when the run is not on the main
    thread, records of the main thread, where a host that runs the engine in a thread does its own work
    (the worker harness reports over HTTP from there; the pipeline never runs there).
    """

    def __init__(self, deliver: Callable[[logging.LogRecord], None]):
        super().__init__(logging.NOTSET)
        self.deliver = deliver
        main = threading.main_thread()
        self._host_thread = None if threading.current_thread() is main else main.ident
        self._inside = threading.local()  # an observer that logs must not loop back into itself

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._inside, "active", False) or record.thread == self._host_thread:
            return
        if record.name == _WORKER_LOG_SERVICE and record.msg == _WORKER_LOG_FORMAT:
            record = worker_record(record)
        elif record.name.startswith(_RUNNER_LOGGERS):
            return
        self._inside.active = True
        try:
            self.deliver(record)
        except Exception:  # an observer's failure must not fail the pipeline
            self.handleError(record)
        finally:
            self._inside.active = False


@contextlib.contextmanager
def pipeline_logs(deliver: Callable[[logging.LogRecord], None], level: int) -> Iterator[None]:
    """Capture log records at `level` and above while the block runs (the root logger is set to it)."""
    root = logging.getLogger()
    handler = PipelineLogHandler(deliver)
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def worker_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rebuild the LogRecord an SDK worker subprocess sent (as a Fn API LogEntry) over the logging service."""
    from apache_beam.portability.api import beam_fn_api_pb2

    # local_job_service logs str(entry) with its newlines made spaces: text format does not mind.
    text = record.args[0] if isinstance(record.args, tuple) and record.args else None
    if not isinstance(text, str | bytes):
        return record
    try:
        entry = text_format.Parse(text, beam_fn_api_pb2.LogEntry())
    except text_format.ParseError:
        return record
    return entry_record(entry)


def entry_record(entry) -> logging.LogRecord:
    """The LogRecord behind a Fn API LogEntry an SDK worker sent: its logger, level, location, time, traceback."""
    from apache_beam.runners.worker.log_handler import LOGENTRY_TO_LOG_LEVEL_MAP

    path, colon, line = entry.log_location.rpartition(":")
    if not colon:  # Java's harness: the logger's name (org.apache.beam.fn.harness.FnHarness), no line
        path, line = entry.log_location, ""
    rebuilt = logging.LogRecord(
        name=_module_of(path) or "worker",
        level=LOGENTRY_TO_LOG_LEVEL_MAP.get(entry.severity, logging.INFO),
        pathname=path or entry.log_location,
        lineno=int(line) if line.isdigit() else 0,
        msg=entry.message,
        args=None,
        exc_info=None,
    )
    rebuilt.created = entry.timestamp.seconds + entry.timestamp.nanos / 1e9
    rebuilt.msecs = (entry.timestamp.nanos // 1_000_000) % 1000
    rebuilt.threadName = entry.thread or rebuilt.threadName
    if entry.trace:
        rebuilt.exc_text = entry.trace
    return rebuilt


# gRPC's CANCELLED when the runner closes the data stream, and the control stream.
_HUNG_UP = ("Multiplexer hanging up", "Runner closed connection")


def hang_up_quieted(record: logging.LogRecord) -> logging.LogRecord:
    """An SDK worker's error that says only that the runner closed its channels (Flink does when the job's tasks
    end: finished, drained, cancelled; the worker then logs "Failed to read inputs in the data plane" and "Python
    sdk harness failed") as what it is, an INFO, not an ERROR in the job's messages. Why the tasks ended, if
    they failed, the engine reports from the runner."""
    text = f"{record.msg}\n{record.exc_text or ''}"
    if record.levelno >= logging.ERROR and any(said in text for said in _HUNG_UP):
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
    return record


@contextlib.contextmanager
def worker_log_service(deliver: Callable[[logging.LogRecord], None], socket: Path | None = None) -> Iterator[str]:
    """A Fn API logging service for SDK workers that run outside this process (Prism's, Flink's): each LogEntry
    they send goes to `deliver` as its LogRecord. Yields the service's address: on loopback, or at the Unix
    socket `socket` (a stale one is replaced: SDK workers reconnect to the same address, so the service of
    whoever runs the job now gets their logs). The workers filter at the job's log level themselves
    (sdk_worker_main sets it from default_sdk_harness_log_level)."""
    from concurrent import futures

    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    class Service(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
        def Logging(self, request_iterator, context):
            for entries in request_iterator:
                for entry in entries.log_entries:
                    try:
                        deliver(hang_up_quieted(entry_record(entry)))
                    except Exception:  # an observer's failure must not cut the worker's log stream
                        logging.getLogger(__name__).exception("could not pass on an SDK worker's log record")
            return iter(())

    # A worker's log stream holds a thread for its life: room for many SDK workers of the run.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="worker-logs"))
    beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(Service(), server)
    if socket is not None:
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        address = f"unix:{socket}"
        server.add_insecure_port(address)
    else:
        # IPv4 loopback, not "localhost", whose two addresses may give a port another process holds on the other.
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        yield address
    finally:
        server.stop(1)


def _module_of(path: str) -> str:
    match = re.search(r"site-packages/(.+)\.py$", path)
    if match:
        return match.group(1).replace("/", ".").removesuffix(".__init__")
    return path.rsplit("/", 1)[-1].removesuffix(".py")


# -- errors -------------------------------------------------------------------

# Beam's frames: its Python files, and its compiled modules (reported as "apache_beam/runners/common.py").
_BEAM_FRAMES = re.compile(r'File "(?:[^"]*/)?apache_beam/')
_TRACEBACK_START = "Traceback (most recent call last):"
_JAVA_FRAME = re.compile(r"^\s+at [\w$.]+\(", re.MULTILINE)


def user_error(exc: BaseException) -> str:
    """The user's exception as a traceback, without the layers Beam wraps around it where they can be told apart.

    In-process, Beam re-raises the user's exception as the same type with the step named
    ("boom [while running 'Explode']"), the original as its cause or context: the innermost exception
    carries the user's frames, the outer one the step. From an SDK worker subprocess only text comes
    back: the harness's formatted traceback inside a RuntimeError.
    """
    chain = [exc]
    while True:
        inner = chain[-1].__cause__ or chain[-1].__context__
        if inner is None or any(inner is seen for seen in chain):
            break
        chain.append(inner)
    innermost = chain[-1]
    if isinstance(innermost, RuntimeError) and _TRACEBACK_START in str(innermost):
        return _worker_traceback(str(innermost))
    if isinstance(innermost, RuntimeError) and _JAVA_FRAME.search(str(innermost)):
        return str(innermost)  # a Java SDK harness's error: its Java stack trace, as the harness sent it
    lines = traceback.format_exception(type(innermost), innermost, innermost.__traceback__)
    # The same error as Beam re-raised it, outermost first: its message also names the step.
    augmented = next(e for e in chain if type(e) is type(innermost))
    ending = traceback.format_exception_only(type(augmented), augmented)
    lines = lines[: len(lines) - len(traceback.format_exception_only(type(innermost), innermost))] + ending
    return "".join(_drop_beam_frames(lines))


def _worker_traceback(text: str) -> str:
    """The last traceback in an SDK harness's error text (the user's, re-raised by Beam at the end)."""
    start = text.rfind(_TRACEBACK_START)
    tail = text[start:] if start >= 0 else text
    lines = [line + "\n" for line in tail.splitlines()]
    return "".join(_drop_beam_frames(lines))


def _drop_beam_frames(lines: list[str]) -> list[str]:
    """Traceback lines without the frames inside apache_beam (each frame: its File line and the code line after).

    Kept whole when every frame is Beam's: then the error is Beam's own and its frames are the story.
    """
    kept, skip_code = [], False
    for line in lines:
        for part in line.splitlines(keepends=True):
            if _BEAM_FRAMES.search(part):
                skip_code = True
                continue
            if skip_code and part.startswith("    "):
                continue
            skip_code = False
            kept.append(part)
    frames = sum(1 for line in kept if line.lstrip().startswith('File "'))
    return kept if frames else lines
