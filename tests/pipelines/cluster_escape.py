"""A pipeline whose one DoFn tries to run code outside its sandbox through the Flink cluster's files and services
(tests/test_streaming.py). It appends a line to files of the cluster's that are used outside the sandbox
(APPEND_TO: paths joined by ':'), then submits a pipeline of its own to Beam's Flink job server (which any process
on the host can reach) with a PROCESS environment, whose command the cluster runs. The command, a script the DoFn
writes, marks where it ran and tries to write where user code may not: a new file (FORBIDDEN), and the same lines.

python cluster_escape.py OUTPUT JOB_SERVER SCRIPT_DIR FORBIDDEN APPEND_TO JOB_NAME DATAFLOW_FLAGS...
"""

import json
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


class JavaStaging(PipelineOptions):
    """The Java option Beamport's Flink engine sets (the cluster has Beam's classes: nothing to stage), declared
    so that the portable runner passes it on."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--pipeline_resources_detector_factory_class")


def escape(_, job_server: str, script_dir: str, forbidden: str, append_to: str, job_name: str) -> str:
    ran = os.path.join(script_dir, "ran")
    script = os.path.join(script_dir, "command.sh")
    with open(script, "w") as out:
        # What the command could do, for the test to see: where it ran (uid, namespace), and a file written where
        # user code may not write.
        planted = "".join(f"echo '# planted by user code' >> {path} 2>/dev/null\n" for path in append_to.split(":"))
        out.write(
            f"#!/bin/sh\ntouch {forbidden} 2>/dev/null\n{planted}"
            f'echo "$(id -u) $(readlink /proc/self/ns/user)" > {ran}.part && mv {ran}.part {ran}\n'
            # (no SDK harness: the job waits for one until cancelled, rather than fail and run this again)
            "exec sleep 600\n"
        )
    os.chmod(script, 0o755)
    seen = {"own_user_namespace": os.readlink("/proc/self/ns/user")}
    for path in append_to.split(":"):  # first from here, the DoFn's own sandbox
        try:
            with open(path, "a") as planted:
                planted.write("# planted by user code\n")
        except OSError:
            pass
    options = PipelineOptions(
        [
            "--runner=PortableRunner",
            f"--job_name={job_name}",
            f"--job_endpoint={job_server}",
            "--environment_type=PROCESS",
            f"--environment_config={json.dumps({'command': script})}",
            "--pipeline_resources_detector_factory_class=dev.beamport.flink.NothingToStage",
        ]
    )
    options.view_as(JavaStaging)  # (the class reaches the worker with this function, and declares its option)
    try:
        inner = beam.Pipeline(options=options)
        _ = inner | beam.Create([1]) | beam.Map(lambda x: x)
        result = inner.run()
        seen["submitted"] = True
        deadline = time.monotonic() + 120
        while not os.path.exists(ran) and time.monotonic() < deadline:
            time.sleep(0.5)
        try:
            result.cancel()
        except Exception as exc:  # noqa: BLE001 (ended already)
            seen["cancel"] = str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 (refused: the test says what came back)
        seen["submitted"] = False
        seen["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    if os.path.exists(ran):
        uid, namespace = open(ran).read().split()
        seen["command_uid"], seen["command_user_namespace"] = int(uid), namespace
    return json.dumps(seen)


if __name__ == "__main__":
    output, job_server, script_dir, forbidden, append_to, job_name, *rest = sys.argv[1:]
    p = beam.Pipeline(options=PipelineOptions(rest))
    (
        p
        | beam.Create([None])
        | beam.Map(escape, job_server, script_dir, forbidden, append_to, job_name)
        | beam.io.WriteToText(output, shard_name_template="")
    )
    result = p.run()
    print("JOB_ID", result.job_id(), flush=True)
    result.wait_until_finish()
