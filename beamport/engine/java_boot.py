"""Start Beam Java's SDK harness (org.apache.beam.fn.harness.FnHarness) for the embedded engine, as Beam's Java
container boot program (sdks/java/container/boot.go) does.

FnApiRunner starts a subprocess environment's command through a shell, with the Fn API's endpoints and the
job's options in its environment (CONTROL_API_SERVICE_DESCRIPTOR, LOGGING_API_SERVICE_DESCRIPTOR,
PIPELINE_OPTIONS, WORKER_ID). This program adds what Beam's Java boot sets besides (HARNESS_ID, the options
as a file, SEMI_PERSISTENT_DIRECTORY) and starts the JVM: the job's staged jars and Beamport's harness jars
(jamm, which the harness declares `provided`: Beam's container image brings it) on its class path.

The JVM stays in the process group of the executor that runs the job (the work item's group), which the
executor kills on cancel, and it dies with its parent, this program (PR_SET_PDEATHSIG), which dies with the
executor: no JVM outlives its job. This program waits for the JVM: one that ends in failure before it reached
the runner (a class path without the harness, a JVM that cannot start) would leave FnApiRunner waiting for it for
good, so this program answers the runner in its place, as the harness would answer an instruction it failed,
with the JVM's exit status and its last lines of output: the job fails saying why.
`python -m beamport.engine.java_boot SPEC`, SPEC a JSON file: {"class_path": [...],
"java": "/usr/bin/java", "semi_persistent_dir": "..."} (written by harness_command).

For Prism, a process environment runs `python -m beamport.engine.java_boot SPEC` with Prism's flags after it
(`--id='ID' --provision_endpoint=HOST:PORT ...`, the container contract): as Beam's Java boot does, this asks the
provisioning service for the Fn API's endpoints and the job's options (as Prism was given them) and hands them
to the harness in its variables; the JVM then dies with Prism, its parent. Under FnApiRunner and Prism alike, the
harness runs in the executor's warm JVM when it has one for these jars (engine/java_warm.py). On Flink, the
cluster's SDK worker pool starts it the same way, through beamport.engine.sdk_boot (which fetched the jars), in the
warm JVM of the pool's Java spare when there is one for these jars; there the harness's logs and control stream go
through relays (engine/harness_process.py), for the job's messages and its user metrics' steps.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
from pathlib import Path

from beamport.engine import beam_protos, harness_process
from beamport.processes import die_with_parent

HARNESS_MAIN = "org.apache.beam.fn.harness.FnHarness"
# Beam Java's harness measures cached objects with jamm, which it declares `provided` (Beam's SDK container
# brings it): Beamport brings it (scripts/java-harness-jars, or the local Maven repository).
JAMM = ("com.github.jbellis", "jamm", "0.4.0")
HARNESS_JARS_DIR = Path.home() / ".cache" / "beamport" / "java"


class JavaUnavailable(Exception):
    """No Java, or no harness jars, on this host (the message says what to install)."""


def harness_jars(jars_dir: Path | None = None) -> list[str]:
    """Beamport's own jars for the harness's class path, found on this host (outside any sandbox, where the
    home directory is the worker's): in `jars_dir` (default ~/.cache/beamport/java), else in the local Maven
    repository. Empty when they are missing: a Java job then fails, saying how to get them."""
    group, artifact, version = JAMM
    name = f"{artifact}-{version}.jar"
    candidates = [
        (jars_dir or HARNESS_JARS_DIR) / name,
        Path.home() / ".m2" / "repository" / group.replace(".", "/") / artifact / version / name,
    ]
    return [str(path.resolve()) for path in candidates if path.is_file()][:1]


def find_java() -> str:
    """The java binary: $JAVA_HOME/bin/java, else the one on PATH; JavaUnavailable when there is none."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise JavaUnavailable(
            "This worker has no Java to run the Beam Java SDK harness with (install a JDK 17 or later, e.g. "
            "Debian's openjdk-17-jre-headless, or set JAVA_HOME)."
        )
    return java


def harness_command(class_path: list[str], harness: list[str], workdir: Path) -> str:
    """The subprocess environment's command (a shell command line) that runs the Java harness over `class_path`
    (the staged jars) and `harness` (harness_jars), its files in `workdir`."""
    if not harness:
        group, artifact, version = JAMM
        raise JavaUnavailable(
            f"This worker lacks the Java SDK harness's jar {group}:{artifact}:{version}: run scripts/java-harness-jars "
            f"(or `mvn dependency:get -Dartifact={group}:{artifact}:{version}`) on it."
        )
    spec = workdir / "java-harness.json"
    spec.write_text(
        json.dumps({"class_path": [*harness, *class_path], "java": find_java(), "semi_persistent_dir": str(workdir)})
    )
    return " ".join(shlex.quote(part) for part in (sys.executable, "-m", "beamport.engine.java_boot", str(spec)))


def jvm_arguments(class_path_file: Path) -> list[str]:
    """The JVM's flags, as Beam's Java boot sets them: a heap of 70% of memory (here: of the sandbox's
    address-space limit, of which the JVM needs some beside its heap), Beam's GC choices, the class path."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        memory = min(memory, limit // 2)
    return [
        f"-Xmx{max(memory * 70 // 100, 256 << 20)}",
        "-XX:+UseParallelGC",
        "-XX:+AlwaysActAsServerClassMachine",
        "-XX:-OmitStackTraceInFastThrow",
        f"@{class_path_file}",  # the class path in an argument file: hundreds of jars
    ]


def main(argv: list[str], info=None, announce: bool = False) -> None:
    """argv: SPEC, then a runner's flags, if any; info: the worker's ProvisionInfo, if its caller asked already;
    announce: tell the job through its logs when the harness takes a warm JVM (Flink's pool: no engine beside this
    program sees it)."""
    spec = json.loads(Path(argv[0]).read_text())
    workdir = Path(spec["semi_persistent_dir"])
    parent = 0  # what this program dies with: nothing to check (FnApiRunner's subprocess), or Prism
    if any(arg.startswith("--provision_endpoint") for arg in argv[1:]):
        parent = os.getppid()
        provisioned_environment(argv[1:], info)
    worker_id = os.environ.get("WORKER_ID", "")
    options_file = workdir / f"pipeline-options-{worker_id or os.getpid()}.json"
    options_file.write_text(os.environ.get("PIPELINE_OPTIONS", "{}"))
    class_path_file = workdir / "class-path.args"
    class_path_file.write_text("-cp " + argfile_quoted(os.pathsep.join(spec["class_path"])) + "\n")
    env = dict(os.environ)
    env.pop("PIPELINE_OPTIONS", None)  # in the file: the options may be longer than a variable may be
    env.update(
        HARNESS_ID=worker_id,  # the id the harness names itself by to the runner's control service
        PIPELINE_OPTIONS_FILE=str(options_file),
        SEMI_PERSISTENT_DIRECTORY=str(workdir),
    )
    die_with_parent(parent)
    control = harness_process.descriptor_url(env.get("CONTROL_API_SERVICE_DESCRIPTOR", ""))
    # The executor above (FnApiRunner's, Prism's) or the pool's spare (Flink's) may have a JVM warm for it
    # (engine/java_warm.py).
    from beamport.engine import java_warm

    taken = java_warm.claim(spec["class_path"], known=spec.get("sha256"))
    if taken:
        if announce:
            java_warm.announce(harness_process.descriptor_url(env.get("LOGGING_API_SERVICE_DESCRIPTOR", "")))
        java_warm.run(*taken, env, control, worker_id)
    argv = [spec["java"], *jvm_arguments(class_path_file), HARNESS_MAIN]
    harness_process.run(argv, env, "The Java SDK harness (a JVM)", control, worker_id)


def provisioned_environment(argv: list[str], info=None) -> None:
    """Started by Prism with the container contract's flags: the variables FnApiRunner would have set, from the
    provisioning service (Beam's Java boot: sdks/java/container/boot.go)."""
    from google.protobuf import json_format

    from beamport.engine.sdk_boot import boot_arguments, provision_info

    args = boot_arguments(argv)
    info = info or provision_info(args.provision_endpoint, args.id)
    control = info.control_endpoint.url or args.control_endpoint
    logging = info.logging_endpoint.url or args.logging_endpoint
    if not control or not logging:
        sys.exit(f"java_boot: the runner provisioned no control or logging endpoint for worker {args.id}")
    options = json_format.MessageToDict(info.pipeline_options)
    # A drain truncates the job's sources of Java's own (PeriodicImpulse...): harness_process.Drain.
    logging, control = harness_process.relayed(options, logging, control, truncates=True)
    os.environ.update(
        WORKER_ID=args.id,
        CONTROL_API_SERVICE_DESCRIPTOR=f"url: {json.dumps(control)}",
        LOGGING_API_SERVICE_DESCRIPTOR=f"url: {json.dumps(logging)}",
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
    )
    if info.status_endpoint.url:
        os.environ["STATUS_API_SERVICE_DESCRIPTOR"] = f"url: {json.dumps(info.status_endpoint.url)}"
    if info.runner_capabilities:
        os.environ["RUNNER_CAPABILITIES"] = " ".join(info.runner_capabilities)


def argfile_quoted(text: str) -> str:
    """A value in a java @argfile: double-quoted, with its backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    beam_protos.without_sdk()  # the harness is a JVM: of Beam, this program needs its protos only
    main(sys.argv[1:])
