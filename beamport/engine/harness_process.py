"""What the launchers of other SDKs' harnesses share (engine/java_boot.py: a JVM; engine/go_boot.py on Flink: a
Go worker binary): the harness as a child process, whose failure the runner hears of, and relays of its log and
control streams.

The harness runs as a child, its output copied to this program's stderr, so that when it exits in failure before
it reached the runner, this program connects in its place and answers the runner's first instruction with the
failure and the harness's last lines (`run`): the job then fails saying why, rather than waiting on a worker
that never comes. The relays are loopback gRPC services for the life of this program: one passes the harness's
log entries on to the Beamport engine's logging service (a Unix socket, which Beam Java's channels do not dial),
one sits between the harness and the runner's control service and notes the user metrics each response reports
(metric_keys.KeyNotes: for a Flink job's live metrics).
"""

from __future__ import annotations

import collections
import os
import queue
import re
import subprocess
import sys
from collections.abc import Callable, Iterable

from beamport.processes import die_with_parent

# gRPC's fork support (on by default in grpcio's core) restarts its poller thread in a forked child, where
# subprocess has closed the poller's descriptor before exec: the child can abort before it becomes the harness
# (grpc/grpc#43055; seen in CI: "The Java SDK harness (a JVM) exited with status -6 ... epoll_wait error: Bad file
# descriptor", about 1 start in 100 here). These launchers use gRPC only as clients and relays, never in a child:
# off, before gRPC starts in this process (the launchers import this module before any gRPC call). The embedded
# engine's executor imports it too (through go_boot): its children exec at once and use none of its gRPC either.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# An ApiServiceDescriptor's text, as FnApiRunner sets it in a subprocess worker's variables (`url: "HOST:PORT"`).
# (An endpoint's url has no character that text format escapes.)
_DESCRIPTOR_URL = re.compile(r'^\s*url:\s*"([^"\\]*)"', re.MULTILINE)

OUTPUT_LINES = 20  # of a failed harness's output, in the job's failure
ANSWER_TIMEOUT_S = 30.0
# Said on stderr once a launcher has answered the runner in its failed harness's place: the SDK worker pool, which
# answers for a worker that ends in failure (engine/worker_pool.py), then has nothing to add.
ANSWERED_LINE = "beamport: the runner was answered in the failed harness's place"


def run(
    argv: list[str], env: dict[str, str], who: str, control_url: str, worker_id: str, done_line: str | None = None
) -> None:
    """Run the harness `argv` (`who` names it in a failure: "The Java SDK harness (a JVM)") with `env`, dying with
    this program; exit with its status, having answered the runner at `control_url` in its place if it failed.
    A harness that says `done_line` when the runner has closed its streams, and then waits to be killed (Beam Go's
    worker), is killed then, and this program exits as it would have: in success (FnApiRunner waits for its
    workers to exit)."""
    harness = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
    )
    assert harness.stdout is not None
    last, ended = follow(harness.stdout, lambda line: done_line is not None and line == done_line)
    if ended is not None:
        harness.kill()
        harness.wait()
        sys.exit(0)
    finish(harness.wait(), last, who, control_url, worker_id)


def follow(output: Iterable[bytes], ends: Callable[[str], bool]) -> tuple[collections.deque[str], str | None]:
    """Copy a harness's output to this program's stderr until it ends, or until a line that `ends` it (returned,
    not copied); with its last OUTPUT_LINES lines, for a failure's answer."""
    last: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
    for raw in output:
        line = raw.decode(errors="replace").rstrip()
        if ends(line):
            return last, line
        sys.stderr.buffer.write(raw)
        sys.stderr.flush()
        last.append(line)
    return last, None


def finish(status: int, last, who: str, control_url: str, worker_id: str) -> None:
    """The harness ended with `status`, its `last` lines of output: exit with its status, having answered the
    runner at `control_url` in its place if it failed."""
    if status != 0:
        why = f"{who} exited with status {status} before it reached the runner"
        answer_in_its_place(control_url, worker_id, why + (":\n" + "\n".join(last) if last else "."))
        print(ANSWERED_LINE, file=sys.stderr, flush=True)
    sys.exit(status)


def descriptor_url(text: str) -> str:
    """The url of an ApiServiceDescriptor in text format ("" when it has none), read without Beam's protos: a
    launcher started for FnApiRunner needs only this, and importing apache_beam costs it 2.5 s before the harness
    starts (its package imports the whole SDK)."""
    found = _DESCRIPTOR_URL.search(text)
    return found.group(1) if found else ""


def answer_in_its_place(control_url: str, worker_id: str, error: str) -> None:
    """The harness ended in failure: if the runner still waits for this worker to connect, connect in its place
    and answer its first instruction with `error` (a harness that connected first and failed later, the runner
    has seen go already: nothing is there to answer). Gives up after ANSWER_TIMEOUT_S."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    responses: queue.SimpleQueue = queue.SimpleQueue()
    with grpc.insecure_channel(control_url) as channel:
        stub = beam_fn_api_pb2_grpc.BeamFnControlStub(channel)
        metadata = [("worker_id", worker_id)]
        try:
            for request in stub.Control(iter(responses.get, None), metadata=metadata, timeout=ANSWER_TIMEOUT_S):
                responses.put(beam_fn_api_pb2.InstructionResponse(instruction_id=request.instruction_id, error=error))
                responses.put(None)
        except grpc.RpcError:
            pass  # the runner went, or had seen this worker go: it knows


def relayed(options: dict, logging_endpoint: str, control_endpoint: str, truncates: bool = False) -> tuple[str, str]:
    """The logging and control endpoints a harness of a job with these provisioned options is given: its logs to
    the Beamport engine's logging service when the job names one that answers (as sdk_boot's workers do), its
    control stream through a relay noting its user metrics' keys when the job names a keys file (a Flink job's),
    and, with `truncates`, ending its unbounded splittable DoFns once the job's drain file is there (Drain)."""
    from beamport.engine import metric_keys
    from beamport.engine.sdk_boot import LOGGING_ENDPOINT_OPTION, option, reachable

    beamport_logs = option(options, LOGGING_ENDPOINT_OPTION)
    if beamport_logs and reachable(beamport_logs):
        logging_endpoint = relay_logs(beamport_logs)
    keys_file = option(options, metric_keys.OPTION)
    drain = drain_of(options) if truncates else None
    if keys_file or drain:
        notes = metric_keys.KeyNotes(keys_file) if keys_file else None
        control_endpoint = relay_control(control_endpoint, notes, drain)
    return logging_endpoint, control_endpoint


def drain_of(options: dict) -> Drain | None:
    """The truncation of a job's unbounded splittable DoFns on drain (Drain), when its provisioned options name
    its drain file (Beamport's streaming engines set one for every job)."""
    from beamport.engine.sdk_boot import option
    from beamport.protocol import DRAIN_FILE_OPTION

    drain_file = option(options, DRAIN_FILE_OPTION)
    return Drain(drain_file) if drain_file else None


class Drain:
    """Dataflow's drain of a source in SDK code: once the job's drain file is there, the remainder of every
    unbounded splittable DoFn (PeriodicImpulse, an unbounded Read) is truncated to nothing, as Dataflow truncates an
    unbounded restriction: the residuals the harness hands back (a self-checkpoint's, a split's) are dropped before
    the runner sees them. The source reads no more, its watermark holds go, its windows fire, the job ends.
    Bounded splittable DoFns (a file's read) keep their residuals: their input is read to its end."""

    def __init__(self, drain_file: str):
        self.drain_file = drain_file
        self.unbounded: set[str] = set()  # the transforms (of any bundle descriptor) that process unbounded SDFs
        self._draining = False

    def learn(self, descriptor) -> None:
        """Note a bundle descriptor's unbounded splittable DoFns (their process transforms, which residuals name)."""
        from apache_beam.portability import common_urns
        from apache_beam.portability.api import beam_runner_api_pb2

        process = common_urns.sdf_components.PROCESS_SIZED_ELEMENTS_AND_RESTRICTIONS.urn
        unbounded = beam_runner_api_pb2.IsBounded.UNBOUNDED
        for transform_id, transform in descriptor.transforms.items():
            outputs = [descriptor.pcollections[p] for p in transform.outputs.values() if p in descriptor.pcollections]
            if transform.spec.urn == process and any(p.is_bounded == unbounded for p in outputs):
                self.unbounded.add(transform_id)

    def draining(self) -> bool:
        self._draining = self._draining or os.path.exists(self.drain_file)
        return self._draining

    def truncate(self, response) -> None:
        """Drop the unbounded residuals of an instruction's response, once the job drains."""
        if not self.unbounded or not self.draining():
            return
        for roots in (response.process_bundle.residual_roots, response.process_bundle_split.residual_roots):
            kept = [root for root in roots if root.application.transform_id not in self.unbounded]
            if len(kept) != len(roots):
                del roots[:]
                roots.extend(kept)


def relay_logs(target: str) -> str:
    """A logging service that passes the harness's log entries on to `target`, the Beamport engine's logging
    service (engine/capture.py: on a Unix socket, which Beam Java's gRPC channels do not reach: they dial
    host:port). Its address."""
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    upstream = beam_fn_api_pb2_grpc.BeamFnLoggingStub(_channel(target))

    class Relay(beam_fn_api_pb2_grpc.BeamFnLoggingServicer):
        def Logging(self, request_iterator, context):
            return upstream.Logging(request_iterator)

    return _serve(lambda server: beam_fn_api_pb2_grpc.add_BeamFnLoggingServicer_to_server(Relay(), server))


def relay_control(target: str, notes, drain: Drain | None = None) -> str:
    """A control service between the harness and the runner's at `target`, that notes the user metrics each
    response reports (`notes`: metric_keys.KeyNotes, or None): Beam's Flink runner shows a running job's user
    metrics by names without their step, which the notes give (engine/metric_keys.py); and drains its sources
    (`drain`). Its address."""
    from apache_beam.portability.api import beam_fn_api_pb2_grpc

    upstream = beam_fn_api_pb2_grpc.BeamFnControlStub(_channel(target))

    def worker(context) -> list[tuple[str, str]]:  # the runner tells its workers apart by this header
        return [(key, value) for key, value in context.invocation_metadata() if key == "worker_id"]

    class Relay(beam_fn_api_pb2_grpc.BeamFnControlServicer):
        def Control(self, request_iterator, context):
            def responses():
                for response in request_iterator:
                    if notes is not None:
                        notes.note(user_monitoring_infos(response))
                    if drain is not None:
                        drain.truncate(response)
                    yield response

            call = upstream.Control(responses(), metadata=worker(context))
            context.add_callback(call.cancel)  # the harness went: so does the runner's stream
            if drain is None:
                return call

            def requests():  # a runner may register its bundle descriptors here rather than be asked for them
                for request in call:
                    for descriptor in request.register.process_bundle_descriptor:
                        drain.learn(descriptor)
                    yield request

            return requests()

        def GetProcessBundleDescriptor(self, request, context):
            descriptor = upstream.GetProcessBundleDescriptor(request, metadata=worker(context), timeout=120)
            if drain is not None:
                drain.learn(descriptor)
            return descriptor

    return _serve(lambda server: beam_fn_api_pb2_grpc.add_BeamFnControlServicer_to_server(Relay(), server))


def user_monitoring_infos(response) -> list:
    """The MonitoringInfos an instruction's response carries: a bundle's final or progress ones, or the metadata of
    short ids the runner asked for (labels and URNs, which is what a key needs)."""
    infos = [*response.process_bundle.monitoring_infos, *response.process_bundle_progress.monitoring_infos]
    return infos + list(response.monitoring_infos.monitoring_info.values())


# Fn API messages (a bundle's descriptor) may be large: no limit, as Beam's own channels.
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_RELAYS: list = []  # the relays' servers, kept while this program runs


def _channel(target: str):
    import grpc

    return grpc.insecure_channel(target, options=_UNLIMITED)


def _serve(add) -> str:
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay"), options=_UNLIMITED)
    add(server)
    # IPv4 loopback, not "localhost": that names two addresses, and the port chosen on one may be another process's
    # on the other, which the harness would then dial (seen: a harness that waited for good on a stranger's port).
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _RELAYS.append(server)
    return f"127.0.0.1:{port}"
