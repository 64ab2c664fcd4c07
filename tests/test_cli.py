"""`beamport jobs ...`: the real CLI, run as a subprocess against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, Api, beamport_command, free_port

from beamport.cli import client as client_module
from beamport.cli.client import DataflowClient, MessageFollower, format_time_us, parse_time_us
from beamport.cli.output import short_enum, yaml_lines

# The CLI only speaks HTTP: one store backend is enough here (the API tests cover both).
one_backend = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

# The first message of a streaming job (the test servers have no streaming engine): a WARNING every test can count on.
NO_ENGINE = "This Beamport server has no streaming engine"


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMPORT_")}
    env.update(extra)
    return env


def beamport(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beamport", "jobs", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture
def cli(server, project):
    """Runs `beamport jobs ARGS --endpoint <server> --project <project>`; asserts no traceback."""

    def run(*args: str, ok: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = beamport(*args, "--endpoint", server.url, "--project", project, **kwargs)
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    return run


def state(api: Api, job_id: str) -> str:
    return api.get(job_id).json()["currentState"]


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Rows of a `jobs list` table by job id: {id: [id, name, type, state, region, date, time]}."""
    lines = stdout.splitlines()
    assert lines[0].split()[:5] == ["JOB_ID", "NAME", "TYPE", "STATE", "REGION"], stdout
    return {line.split()[0]: line.split() for line in lines[1:]}


# -- list ---------------------------------------------------------------------------


@one_backend
def test_list_table_shows_the_jobs(cli, api):
    batch = api.create("nightly-batch", type="JOB_TYPE_BATCH")
    stream = api.create("clicks-stream", type="JOB_TYPE_STREAMING")
    rows = table_rows(cli("list").stdout)
    assert set(rows) == {batch["id"], stream["id"]}
    assert rows[batch["id"]][1:5] == ["nightly-batch", "Batch", "Pending", "us-central1"]
    assert rows[stream["id"]][1:5] == ["clicks-stream", "Streaming", "Pending", "us-central1"]
    assert " ".join(rows[batch["id"]][5:7]) == batch["createTime"][:19].replace("T", " ")


@one_backend
def test_list_json_is_what_the_api_lists(cli, api):
    for name in ("one", "two", "three"):
        api.create(name)
    listed = json.loads(cli("list", "--format", "json").stdout)
    assert listed == api.all_jobs()
    assert [job["name"] for job in listed] == ["three", "two", "one"]


@one_backend
def test_list_empty(cli):
    result = cli("list")
    assert result.stdout == ""
    assert "Listed 0 items." in result.stderr
    assert json.loads(cli("list", "--format", "json").stdout) == []


@one_backend
def test_list_status_filter(cli, api):
    running = api.create("still-active")
    stopped = api.create("stopped-one")
    assert api.update(stopped["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200

    assert set(table_rows(cli("list", "--status", "active").stdout)) == {running["id"]}
    terminated = table_rows(cli("list", "--status", "terminated").stdout)
    assert set(terminated) == {stopped["id"]}
    assert terminated[stopped["id"]][3] == "Cancelled"
    assert set(table_rows(cli("list", "--status", "all").stdout)) == {running["id"], stopped["id"]}
    assert cli("list", "--status", "bogus", ok=False).returncode == 2


@one_backend
def test_list_name_and_limit(cli, api):
    ids = [api.create(f"job-{i}")["id"] for i in range(4)]
    assert set(table_rows(cli("list", "--name", "job-2").stdout)) == {ids[2]}
    newest = json.loads(cli("list", "--limit", "2", "--format", "json").stdout)
    assert [job["id"] for job in newest] == [ids[3], ids[2]]


@one_backend
def test_list_all_regions(cli, server, project, api):
    here = api.create("here")
    there = Api(server.url, project, region="europe-west1").create("there")
    assert set(table_rows(cli("list").stdout)) == {here["id"]}
    assert set(table_rows(cli("list", "--region", "europe-west1").stdout)) == {there["id"]}
    rows = table_rows(cli("list", "--all-regions").stdout)
    assert set(rows) == {here["id"], there["id"]}
    assert rows[there["id"]][4] == "europe-west1"


# -- describe ---------------------------------------------------------------------------


@one_backend
def test_describe_table_and_json(cli, api):
    job = api.create("described", type="JOB_TYPE_STREAMING", labels={"team": "data"})
    table = cli("describe", job["id"]).stdout
    lines = table.splitlines()
    assert f"id: {job['id']}" in lines
    assert "name: described" in lines
    assert "currentState: JOB_STATE_PENDING" in lines
    assert lines[lines.index("labels:") + 1] == "  team: data"

    as_json = json.loads(cli("describe", job["id"], "--format", "json").stdout)
    assert as_json == api.get(job["id"], view="JOB_VIEW_SUMMARY").json()


@one_backend
def test_describe_full_shows_the_environment(cli, api):
    job = api.create(
        "with-env", environment={"tempStoragePrefix": "/tmp/beamport-cli-test", "workerRegion": "us-east1"}
    )
    assert "environment" not in cli("describe", job["id"]).stdout
    assert "environment" not in json.loads(cli("describe", job["id"], "--format", "json").stdout)

    full = cli("describe", job["id"], "--full").stdout.splitlines()
    at = full.index("environment:")
    assert {full[at + 1], full[at + 2]} == {"  tempStoragePrefix: /tmp/beamport-cli-test", "  workerRegion: us-east1"}
    as_json = json.loads(cli("describe", job["id"], "--full", "--format", "json").stdout)
    assert as_json["environment"] == {"tempStoragePrefix": "/tmp/beamport-cli-test", "workerRegion": "us-east1"}


# -- cancel, drain -------------------------------------------------------------------------


@one_backend
def test_cancel(cli, api):
    job = api.create("to-cancel")
    result = cli("cancel", job["id"])
    assert result.stdout.strip() == f"Cancelled job [{job['id']}]; state: JOB_STATE_CANCELLED"
    assert state(api, job["id"]) == "JOB_STATE_CANCELLED"


@one_backend
def test_cancel_json_prints_the_job(cli, api):
    job = api.create("to-cancel-json")
    answer = json.loads(cli("cancel", job["id"], "--format", "json").stdout)
    assert answer["id"] == job["id"] and answer["currentState"] == "JOB_STATE_CANCELLED"


@one_backend
def test_cancel_of_a_finished_job_fails(cli, api):
    job = api.create("cancel-twice")
    cli("cancel", job["id"])
    again = cli("cancel", job["id"], ok=False)
    assert again.returncode == 1
    assert again.stderr.startswith("ERROR: (FAILED_PRECONDITION) ")
    assert "terminal state JOB_STATE_CANCELLED" in again.stderr


@one_backend
def test_drain_streaming_job(cli, api):
    job = api.create("to-drain", type="JOB_TYPE_STREAMING")
    result = cli("drain", job["id"])
    assert result.stdout.strip() == f"Drained job [{job['id']}]; state: JOB_STATE_DRAINED"
    assert state(api, job["id"]) == "JOB_STATE_DRAINED"


@one_backend
def test_drain_batch_job_fails(cli, api):
    job = api.create("batch-no-drain", type="JOB_TYPE_BATCH")
    result = cli("drain", job["id"], ok=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("ERROR: (FAILED_PRECONDITION) ")
    assert "batch jobs cannot be drained" in result.stderr
    assert state(api, job["id"]) == "JOB_STATE_PENDING"


# -- messages ---------------------------------------------------------------------------------


@one_backend
def test_messages(cli, api):
    job = api.create("talkative", type="JOB_TYPE_STREAMING")
    api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"})
    lines = cli("messages", job["id"]).stdout.splitlines()
    assert len(lines) == 2
    assert "  WARNING   " + NO_ENGINE in lines[0]
    assert lines[1].endswith(f"  BASIC     Cancel request is committed for job {job['id']}.")
    assert lines[0][:10] == job["createTime"][:10]

    only_warnings = cli("messages", job["id"], "--importance", "warning").stdout.splitlines()
    assert len(only_warnings) == 1 and NO_ENGINE in only_warnings[0]


@one_backend
def test_messages_json_lines(cli, api):
    job = api.create("talkative-json", type="JOB_TYPE_STREAMING")
    api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"})
    printed = [json.loads(line) for line in cli("messages", job["id"], "--format", "json").stdout.splitlines()]
    assert printed == api.messages(job["id"], minimumImportance="JOB_MESSAGE_BASIC").json()["jobMessages"]
    assert len(printed) == 2


def _cancel_later(api: Api, job_id: str, delay: float) -> threading.Thread:
    def cancel():
        time.sleep(delay)
        api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"})

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


@one_backend
@pytest.mark.parametrize("format", ["table", "json"])
def test_messages_follow_ends_with_the_job(cli, api, format):
    job = api.create(f"followed-{format}", type="JOB_TYPE_STREAMING")
    thread = _cancel_later(api, job["id"], 1.0)
    started = time.monotonic()
    result = cli("messages", job["id"], "--follow", "--poll-interval", "0.1", "--format", format, timeout=15)
    elapsed = time.monotonic() - started
    thread.join()
    assert elapsed >= 1.0  # it kept following until the cancel
    out = result.stdout
    assert out.count(NO_ENGINE) == 1  # polled several times, printed once
    assert out.count(f"Cancel request is committed for job {job['id']}.") == 1
    assert "ended in state JOB_STATE_CANCELLED" in result.stderr
    if format == "json":
        assert [json.loads(line)["messageImportance"] for line in out.splitlines()] == [
            "JOB_MESSAGE_WARNING",
            "JOB_MESSAGE_BASIC",
        ]


@one_backend
def test_messages_follow_of_a_finished_job_returns_at_once(cli, api):
    job = api.create("already-done", type="JOB_TYPE_STREAMING")
    api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"})
    result = cli("messages", job["id"], "--follow", "--poll-interval", "30", timeout=10)
    assert len(result.stdout.splitlines()) == 2


@one_backend
def test_messages_follow_stops_cleanly_on_ctrl_c(server, project, api):
    job = api.create("interrupted", type="JOB_TYPE_STREAMING")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beamport",
            "jobs",
            "messages",
            job["id"],
            "--follow",
            "--poll-interval",
            "0.1",
            "--endpoint",
            server.url,
            "--project",
            project,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    )
    try:
        first = process.stdout.readline()  # it is following once it printed the first message
        assert NO_ENGINE in first
        process.send_signal(signal.SIGINT)
        # Generous: the exit takes a fraction of a second, but a loaded machine (both cores busy beside the
        # suite) once took the CLI past 10 s.
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and "Aborted" not in err


# -- configuration and failures ------------------------------------------------------------------


@one_backend
def test_endpoint_project_and_region_from_the_environment(server, project):
    job = Api(server.url, project, region="asia-east1").create("from-env")
    env = clean_env(BEAMPORT_ENDPOINT=server.url, BEAMPORT_PROJECT=project, BEAMPORT_REGION="asia-east1")
    result = beamport("list", env=env)
    assert result.returncode == 0, result.stderr
    assert set(table_rows(result.stdout)) == {job["id"]}
    described = beamport("describe", job["id"], "--format", "json", env=env)
    assert json.loads(described.stdout)["name"] == "from-env"
    # Flags win over the environment.
    assert beamport("list", "--region", "us-central1", env=env).stdout == ""


# The commands that call no API: the server and worker processes, and a spec file written locally.
NOT_API_COMMANDS = {
    ("serve",),
    ("worker",),
    ("templates", "build-flex"),
    ("emulators", "env"),
    ("emulators", "install"),
}


def _commands(group, path=()):
    """Every command under a click group: (its path, the command). (Typer carries a click of its own: groups are
    told by their commands.)"""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_api_command_takes_the_shared_options():
    """--endpoint, --project, --region and --format, each from its BEAMPORT_* variable, on every command that
    calls the API (cli/options.py): a new command that forgets them fails here."""
    import typer

    from beamport.cli.main import app
    from beamport.cli.options import ENVIRONMENT

    commands = dict(_commands(typer.main.get_command(app)))
    assert NOT_API_COMMANDS <= set(commands) and len(commands) > 30
    for path, command in commands.items():
        if path in NOT_API_COMMANDS:
            continue
        options = {option: p for p in command.params for option in p.opts}
        for name, variable in ENVIRONMENT.items():
            assert f"--{name}" in options, f"beamport {' '.join(path)} has no --{name}"
            assert options[f"--{name}"].envvar == variable, (path, name)
            assert options[f"--{name}"].name == name, (path, name)


@one_backend
def test_workers_list_takes_project_region_and_format(server, project):
    """`beamport workers list --project P` (issue 17): the workers of P's jobs, as any other command takes it."""
    job = Api(server.url, project).create("with-a-worker")
    health = {"labels": {"JOB_ID": job["id"], "WORKER_ID": f"w-{project}"}, "workerHealthReport": {"vmIsHealthy": True}}
    sent = Api(server.url, project).client.post(
        f"/v1b3/projects/{project}/locations/us-central1/WorkerMessages", json={"workerMessages": [health]}
    )
    assert sent.status_code == 200, sent.text
    # --all: the worker reports once, and may be LOST (3 report intervals) by the time a slow machine lists it.
    common = ("--endpoint", server.url, "--format", "json", "--all")
    mine = lambda stdout: [w["workerId"] for w in json.loads(stdout) if w.get("jobId")]  # noqa: E731
    listed = beamport_command("workers", "list", "--project", project, *common)
    assert mine(listed.stdout) == [f"w-{project}"]
    elsewhere = beamport_command("workers", "list", "--project", project, "--region", "europe-west1", *common)
    assert f"w-{project}" not in elsewhere.stdout
    env = clean_env(BEAMPORT_ENDPOINT=server.url, BEAMPORT_PROJECT=project, BEAMPORT_FORMAT="json")
    from_env = subprocess.run(
        [sys.executable, "-m", "beamport", "workers", "list", "--all"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert mine(from_env.stdout) == [f"w-{project}"], from_env.stderr


@one_backend
def test_missing_project_is_a_clear_error(server):
    result = beamport("list", "--endpoint", server.url)
    assert result.returncode == 2
    assert "--project" in result.stderr and "BEAMPORT_PROJECT" in result.stderr
    assert "Traceback" not in result.stderr


@one_backend
def test_missing_job(cli):
    for command in ("describe", "cancel", "messages"):
        result = cli(command, "2020-01-01_00_00_00-1234", ok=False)
        assert result.returncode == 1, command
        assert result.stdout == ""
        expected = "ERROR: (NOT_FOUND) Information about job 2020-01-01_00_00_00-1234 in location us-central1"
        assert result.stderr.startswith(expected), result.stderr


def test_nothing_listening(project):
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = beamport("list", "--endpoint", endpoint, "--project", project, timeout=20)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"ERROR: Could not reach the Dataflow API endpoint {endpoint}")
    assert "Traceback" not in result.stderr


# -- the pieces, in process ----------------------------------------------------------------------------


@one_backend
def test_client_follows_page_tokens(server, project, api, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_PAGE_SIZE", 2)
    ids = [api.create(f"paged-{i}", type="JOB_TYPE_STREAMING")["id"] for i in range(5)]
    api.update(ids[0], {"requestedState": "JOB_STATE_CANCELLED"})
    with DataflowClient(server.url) as client:
        assert [job["id"] for job in client.iter_jobs(project, "us-central1")] == ids[::-1]
        assert [job["id"] for job in client.iter_jobs(project, "us-central1", limit=3)] == ids[:1:-1]
        messages = list(client.iter_messages(project, "us-central1", ids[0]))
        assert [m["messageImportance"] for m in messages] == ["JOB_MESSAGE_WARNING", "JOB_MESSAGE_BASIC"]
        monkeypatch.setattr(client_module, "MAX_PAGE_SIZE", 1)
        assert list(client.iter_messages(project, "us-central1", ids[0])) == messages


class FakeApi:
    """Messages by time, as a server keeps them; start_time is inclusive."""

    def __init__(self):
        self.state = "JOB_STATE_RUNNING"
        self.messages: list[dict] = []
        self.starts: list[str | None] = []

    def add(self, id: str, second: int) -> None:
        self.messages.append({"id": id, "time": format_time_us(second * 1_000_000), "messageText": id})

    def get_job(self, *args, **kwargs) -> dict:
        return {"currentState": self.state}

    def iter_messages(self, project, region, job_id, importance=None, start_time=None):
        self.starts.append(start_time)
        start = parse_time_us(start_time) if start_time else 0
        return [m for m in self.messages if parse_time_us(m["time"]) >= start]


def test_follower_hands_out_each_message_once_even_if_stored_late():
    fake = FakeApi()
    follower = MessageFollower(fake, "p", "r", "j", overlap_seconds=10)
    fake.add("a", 100)
    fake.add("b", 120)
    assert [m["id"] for m in follower.poll()] == ["a", "b"]
    assert fake.starts[-1] is None
    fake.add("late", 115)  # stamped before "b", stored after it
    fake.add("c", 130)
    assert [m["id"] for m in follower.poll()] == ["late", "c"]
    assert fake.starts[-1] == format_time_us(110 * 1_000_000)
    assert follower.poll() == [] and not follower.finished
    fake.state = "JOB_STATE_DONE"
    fake.add("end", 131)
    assert [m["id"] for m in follower.poll()] == ["end"]
    assert follower.finished


def test_output_helpers():
    assert short_enum("JOB_STATE_PENDING", "JOB_STATE_") == "Pending"
    assert short_enum("JOB_STATE_RESOURCE_CLEANING_UP", "JOB_STATE_") == "Resource cleaning up"
    assert short_enum("JOB_TYPE_STREAMING", "JOB_TYPE_") == "Streaming"
    assert short_enum(None, "JOB_TYPE_") == "Unknown"
    assert yaml_lines({"a": {"b": [1, {"c": "x: y"}], "e": {}}, "f": "007", "g": True}) == [
        "a:",
        "  b:",
        "    - 1",
        '    - c: "x: y"',
        "  e: {}",
        'f: "007"',
        "g: true",
    ]


def test_version():
    from beamport import __version__

    done = beamport_command("--version")
    assert done.stdout.strip() == f"beamport {__version__}"
