"""Airflow's Dataflow operators and sensors, unmodified, against a running Beamport: a real Airflow (pinned, in a
virtualenv of its own that scripts/airflow-venv makes; BEAMPORT_TEST_AIRFLOW names it) runs the DAG
tests/airflow_dags/dataflow_operators.py with `airflow dags test`, with this tree's beamport[airflow] plugin
installed the way pip installs it (docs/airflow.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, Api, Server, beamport_command, free_port, required_path
from test_running_jobs import PIPELINES, read_output, texts, wait_state
from test_templates import build_greeter_flex_template

# One worker runs both tests, on one server: the fixture installs this tree into a directory with pip, and two
# pip builds of the same tree at once collide in its build directory.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("airflow")]
DAG_ID = "beamport_dataflow"
HOUR = 1_800_000_000 // 3600 * 3600  # lines of one event-time hour: a drain closes its window


def airflow_run(venv: Path, env: dict[str, str], log: Path, *args: str) -> str:
    """Run `airflow ARGS`, its output to `log` (read it while it runs); it must exit 0. Its output."""
    with open(log, "w") as out:
        done = subprocess.run(
            [str(venv / "bin" / "airflow"), *args], stdout=out, stderr=subprocess.STDOUT, timeout=1800, env=env
        )
    output = log.read_text()
    assert done.returncode == 0, f"airflow {' '.join(args)} (log {log}):\n{output[-30000:]}"
    return output


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """A server that runs batch and (on Prism) streaming jobs, and Airflow's environment pointed at it."""
    venv = required_path("BEAMPORT_TEST_AIRFLOW", "makes Airflow's virtualenv (scripts/airflow-venv)")
    prism = required_path("BEAMPORT_TEST_PRISM", "builds Prism")
    base = tmp_path_factory.mktemp("airflow")
    # This tree's beamport as `pip install beamport[airflow]` puts it (its dependencies are the venv's), built
    # from a copy: pip builds in the source tree, where the other tests' processes write __pycache__ meanwhile.
    source = base / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".*", "__pycache__", "build", "*.egg-info", "beamport-data", "test-artifacts"),
    )
    site = base / "site"
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site)]
    built = subprocess.run([*pip, str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-10000:]
    home = base / "airflow-home"
    home.mkdir()
    shutil.copyfile(venv / "airflow-db" / "airflow.db", home / "airflow.db")  # migrated once, with the venv
    grpc_port = free_port()
    srv = Server(
        base / "data",
        extra_args=("--allow-path", str(base), "--workers", "2", "--prism", str(prism), "--grpc-port", str(grpc_port)),
    ).start()
    connection = {
        "conn_type": "google_cloud_platform",
        "extra": {
            "api_endpoint": srv.url,
            "grpc_endpoint": f"127.0.0.1:{grpc_port}",
            "is_anonymous": True,
            "project": "airflow-demo",
        },
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GOOGLE_"))},
        "PYTHONPATH": str(site),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Parsing the DAG imports the Google provider: far more than the default 30 s on a busy machine.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).parent / "airflow_dags"),
        "AIRFLOW_CONN_BEAMPORT": json.dumps(connection),
    }
    try:
        yield srv, base, venv, env
    finally:
        srv.stop()


def test_airflow_runs_every_dataflow_operator_and_sensor_unmodified(airflow, project):
    srv, base, venv, env = airflow
    api = Api(srv.url, project)
    data = base / project
    (data / "beam-temp").mkdir(parents=True)  # where Beam's DataflowRunner stages (it must exist)
    (data / "words.txt").write_text("the cat and the hat\nThe end\n")
    for name in ("to-cancel", "to-drain"):
        (data / f"{name}.log").write_text("".join(f"k{i % 2},{HOUR + i}\n" for i in range(5)))
    program, spec = build_greeter_flex_template(data, "greeter.py")
    settings = {
        "project": project,
        "data": str(data),
        "flex_spec": str(spec),
        "greeter": str(program),
        "hourly_counts": str(PIPELINES / "hourly_counts.py"),
        "python": str(venv / "bin" / "python"),
        # Beam's DataflowRunner stages locally and speaks REST only to a "localhost" endpoint.
        "dataflow_endpoint": srv.url.replace("127.0.0.1", "localhost"),
    }
    output = airflow_run(
        venv, {**env, "BEAMPORT_DAG_SETTINGS": json.dumps(settings)}, base / "dags-test.log", "dags", "test", DAG_ID
    )

    # Every task succeeded (a failed one fails the run, and `dags test` with it).
    run_id = re.search(rf"{DAG_ID}\.\w+ (\S+) ", output).group(1)
    listed = airflow_run(venv, env, base / "states.log", "tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json")
    states = json.loads(next(line for line in reversed(listed.splitlines()) if line.startswith("[{")))
    assert {s["task_id"]: s["state"] for s in states} == {
        task: "success"
        for task in (
            "template_sync",
            "template_deferred",
            "status",
            "metrics",
            "messages",
            "autoscaling",
            "status_deferred",
            "metrics_deferred",
            "messages_deferred",
            "autoscaling_deferred",
            "flex",
            "beam_batch",
            "streaming_to_cancel",
            "streaming_to_drain",
            "cancel",
            "drain",
        )
    }

    counts = sorted(["the: 2", "cat: 1", "and: 1", "hat: 1", "The: 1", "end: 1"])
    assert read_output(data / "sync" / "counts") == counts
    assert read_output(data / "deferred" / "counts") == counts
    assert read_output(data / "flex" / "out") == ["howdy The end", "howdy the cat and the hat"]
    assert read_output(data / "beam" / "out") == ["hi The end", "hi the cat and the hat"]
    jobs = {job["name"]: job for job in api.all_jobs()}
    final = {name.rsplit("-", 1)[0]: job["currentState"] for name, job in jobs.items()}
    assert final["to-cancel"] == "JOB_STATE_CANCELLED" and final["to-drain"] == "JOB_STATE_DRAINED", final
    drained = next(job["id"] for name, job in jobs.items() if name.startswith("to-drain"))
    wait_state(api, drained, {"JOB_STATE_DRAINED"})
    assert sorted((data / "to-drain.out").read_text().splitlines()) == ["k0,3", "k1,2"], texts(api, drained)
    assert not (data / "to-cancel.out").exists()


HOOKS_WITH_A_KEY = """
import asyncio, json, sys

from airflow.plugins_manager import ensure_plugins_loaded
from airflow.providers.google.cloud.hooks.dataflow import AsyncDataflowHook, DataflowHook

ensure_plugins_loaded()  # as the task runner and the triggerer do before any task or trigger runs
project = sys.argv[1]
jobs = DataflowHook(gcp_conn_id="beamport").get_conn().projects().locations().jobs()
job = jobs.create(projectId=project, location="us-central1", body={"name": "with-a-key"}).execute()


async def main():
    hook = AsyncDataflowHook(gcp_conn_id="beamport")
    state = await hook.get_job_status(job_id=job["id"], project_id=project, location="us-central1")
    try:
        await hook.get_job_status(job_id=job["id"], project_id="elsewhere", location="us-central1")
        refused = ""
    except Exception as e:
        refused = f"{type(e).__name__}: {e}"
    print(json.dumps({"id": job["id"], "state": state.name, "refused": refused}))


asyncio.run(main())
"""


def test_a_connection_with_a_key_made_by_beamport_works_for_both_hooks(airflow, tmp_path, project):
    """Authentication on: the connection's key_path, a key of Beamport's IAM (docs/security.md), is what the sync
    hook's discovery client trades for tokens and what the async hook sends as gRPC metadata."""
    _, _, venv, env = airflow
    grpc_port = free_port()
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--grpc-port", str(grpc_port)), auth=True).start()
    try:
        account = f"airflow@{project}.iam.gserviceaccount.com"
        key = tmp_path / "airflow-key.json"
        for args in (
            ("iam", "service-accounts", "create", "airflow", "--project", project),
            ("iam", "service-accounts", "keys", "create", str(key), "--iam-account", account),
            ("projects", "add-iam-policy-binding", project, "--member", f"serviceAccount:{account}"),
        ):
            role = ("--role", "roles/dataflow.developer") if args[0] == "projects" else ()
            beamport_command(*args, *role, "--endpoint", srv.url, credentials=srv.admin_key)
        extra = {"api_endpoint": srv.url, "grpc_endpoint": f"127.0.0.1:{grpc_port}", "key_path": str(key)}
        connection = {"conn_type": "google_cloud_platform", "extra": extra}
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", HOOKS_WITH_A_KEY, project],
            capture_output=True,
            text=True,
            timeout=600,
            env={**env, "AIRFLOW_CONN_BEAMPORT": json.dumps(connection)},
        )
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-10000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["state"] == "JOB_STATE_PENDING"
        assert seen["refused"].startswith("PermissionDenied") and account in seen["refused"], seen
    finally:
        srv.stop()
