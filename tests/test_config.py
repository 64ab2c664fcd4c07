"""Settings (beamport.config): built once by the CLI, a flag winning over its BEAMPORT_* variable, the variable over
the default; the server's local workers and their executors get theirs explicitly. No server is started here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from beamport.cli.main import app
from beamport.config import EngineSettings, FlinkConfig, Settings, find_prism

FLINK_ENV = {
    "BEAMPORT_FLINK_MASTER": "env-master:8081",
    "BEAMPORT_FLINK_JOB_SERVER": "env-jobs:8099",
    "BEAMPORT_FLINK_SDK_POOL": "env-pool:50000",
}
FLINK_FLAGS = (
    "--flink-master",
    "flag-master:1",
    "--flink-job-server",
    "flag-jobs:2",
    "--flink-sdk-pool",
    "flag-pool:3",
)


@pytest.fixture
def environ(monkeypatch, tmp_path):
    """An environment of no BEAMPORT_* variables and no Prism anywhere (PATH, Go's bin, ~/.cache/beamport/bin):
    set(**variables) adds some."""
    for name in list(os.environ):
        if name.startswith("BEAMPORT_") or name in ("GOBIN", "GOPATH"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    class Environ:
        @staticmethod
        def set(**variables: str) -> None:
            for name, value in variables.items():
                monkeypatch.setenv(name, value)

    return Environ()


@pytest.fixture
def serve(monkeypatch, environ):
    """`beamport serve ARGS` up to the server: the Settings it would run with (or the usage error), and a check that
    building them left os.environ as it was."""
    import beamport.server

    def run(*args: str):
        built: list[Settings] = []
        monkeypatch.setattr(beamport.server, "serve", built.append)
        before = dict(os.environ)
        result = CliRunner().invoke(app, ["serve", *args])
        assert dict(os.environ) == before, "building the settings changed the environment"
        if result.exit_code != 0:
            assert result.exit_code == 2, result.output
            return result.output
        assert len(built) == 1, result.output
        return built[0]

    return run


def prism_binary(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    binary = where / "prism"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return binary


def test_data_dir_flag_over_environment_over_default(serve, environ, tmp_path):
    assert serve().data_dir == Path("beamport-data")
    environ.set(BEAMPORT_DATA_DIR=str(tmp_path / "from-env"))
    assert serve().data_dir == tmp_path / "from-env"
    assert serve("--data-dir", str(tmp_path / "from-flag")).data_dir == tmp_path / "from-flag"


def test_database_url_flag_over_environment_over_default(serve, environ):
    assert serve().database_url is None
    environ.set(BEAMPORT_DATABASE_URL="")
    assert serve().database_url is None, "an empty variable is no setting"
    environ.set(BEAMPORT_DATABASE_URL="postgresql://env/db")
    assert serve().database_url == "postgresql://env/db"
    assert serve("--database-url", "postgresql://flag/db").database_url == "postgresql://flag/db"


def test_other_settings_take_their_variables_too(serve, environ):
    environ.set(BEAMPORT_PORT="9090", BEAMPORT_LOCAL_WORKERS="3", BEAMPORT_SANDBOX="off")
    settings = serve()
    assert (settings.port, settings.local_workers, settings.sandbox) == (9090, 3, "off")
    settings = serve("--port", "9191", "--workers", "0", "--sandbox", "required")
    assert (settings.port, settings.local_workers, settings.sandbox) == (9191, 0, "required")
    environ.set(BEAMPORT_PORT="eighty")
    assert "port (BEAMPORT_PORT)" in serve()


def test_grpc_is_off_unless_a_port_is_given_and_never_on_the_rest_port(serve, environ):
    assert serve().grpc_port == 0
    environ.set(BEAMPORT_GRPC_PORT="9443")
    assert serve().grpc_port == 9443
    assert serve("--grpc-port", "9444").grpc_port == 9444
    assert "gRPC needs a port of its own" in serve("--port", "9444", "--grpc-port", "9444")
    assert "grpc_port (BEAMPORT_GRPC_PORT)" in serve("--grpc-port", "70000")


def test_flink_flags_over_environment_all_three_or_none(serve, environ, tmp_path):
    assert serve().flink is None
    environ.set(BEAMPORT_FLINK_SHARED_DIR=str(tmp_path), BEAMPORT_FLINK_LOG_LEVEL="info")
    assert serve().flink is None, "a shared dir (or scripts/flink-cluster's own variables) is no cluster"

    environ.set(**FLINK_ENV)
    assert serve().flink == FlinkConfig(
        master="env-master:8081", job_server="env-jobs:8099", sdk_pool="env-pool:50000", shared_dir=tmp_path
    )
    flink = serve(*FLINK_FLAGS, "--flink-shared-dir", str(tmp_path / "flag")).flink
    assert (flink.master, flink.job_server, flink.sdk_pool) == ("flag-master:1", "flag-jobs:2", "flag-pool:3")
    assert flink.shared_dir == tmp_path / "flag"


def test_a_flink_cluster_with_beam_on_its_class_path_is_said_so_by_flag_or_variable(serve, environ):
    environ.set(**FLINK_ENV)
    assert not serve().flink.beam_on_cluster, "an operator's own cluster gets the jobs' jars"
    assert serve("--flink-beam-on-cluster").flink.beam_on_cluster
    environ.set(BEAMPORT_FLINK_BEAM_ON_CLUSTER="true")  # as scripts/flink-cluster's endpoints.env says
    settings = serve()
    assert settings.flink.beam_on_cluster
    assert "--flink-beam-on-cluster" in settings.worker_flags(), "the server's local workers are told too"
    # One endpoint by flag, the others from the environment: one cluster, as the operator said.
    assert serve("--flink-master", "flag-master:1").flink.job_server == "env-jobs:8099"


def test_the_flink_clusters_directory_is_hidden_from_user_code(serve, environ, tmp_path):
    """scripts/flink-cluster's endpoints.env names its directory (its pool runs programs there, outside the
    sandbox): the server hides it in user code's sandbox, and tells its local workers."""
    environ.set(**FLINK_ENV)
    assert serve().flink.cluster_dir is None
    environ.set(BEAMPORT_FLINK_CLUSTER_DIR=str(tmp_path / "env"))
    assert serve().flink.cluster_dir == tmp_path / "env"
    settings = serve("--flink-cluster-dir", str(tmp_path))
    assert settings.flink.cluster_dir == tmp_path
    assert settings.worker_flags()[settings.worker_flags().index("--flink-cluster-dir") + 1] == str(tmp_path)
    assert tmp_path in settings.sandbox_with([tmp_path.parent], hidden=[]).hidden


def test_flink_with_an_endpoint_missing_is_a_usage_error(serve, environ):
    error = " ".join(serve("--flink-master", "flag-master:1").split())  # as the terminal wrapped it
    assert (
        "the Flink engine needs all three endpoints: missing --flink-job-server (BEAMPORT_FLINK_JOB_SERVER), "
        "--flink-sdk-pool (BEAMPORT_FLINK_SDK_POOL)" in error
    ), error
    environ.set(BEAMPORT_FLINK_MASTER="env-master:8081", BEAMPORT_FLINK_SDK_POOL="env-pool:50000")
    assert "missing --flink-job-server (BEAMPORT_FLINK_JOB_SERVER)" in serve()


def test_prism_none_on_the_command_line_turns_prism_off(serve, environ, tmp_path):
    binary = prism_binary(tmp_path / "bin")
    environ.set(BEAMPORT_PRISM=str(binary))
    assert serve().prism == binary.resolve()
    settings = serve("--prism", "none")
    assert settings.prism is None and settings.prism_off
    assert "prism: off (--prism none)" in settings.engine_report()
    assert settings.engines() == ({"embedded"}, None)
    assert settings.worker_flags()[-2:] == ["--prism", "none"], "its local workers have none either"


def test_prism_a_path_none_or_not_found(serve, environ, tmp_path):
    settings = serve()
    assert settings.prism is None and not settings.prism_off
    assert any(line.startswith("prism: not found") for line in settings.engine_report())

    environ.set(BEAMPORT_PRISM="none")
    assert serve().prism_off
    binary = prism_binary(tmp_path / "bin")
    assert serve("--prism", str(binary)).prism == binary.resolve(), "a flag wins over BEAMPORT_PRISM=none"
    assert "/nowhere/prism, which is not a file" in serve("--prism", "/nowhere/prism")


def test_prism_found_where_prism_build_puts_it_else_on_the_path_else_in_gos_bin(serve, environ, tmp_path):
    """scripts/prism-build's Prism comes first: the Prism engine runs only a Prism whose job service listens on
    loopback, as that build's does (Beam's own, as `go install` builds it, listens on every interface)."""
    home = tmp_path / "home"
    gobin = prism_binary(home / "go" / "bin")
    assert serve().prism == gobin
    on_path = prism_binary(tmp_path / "empty-bin")
    assert serve().prism == on_path
    built = prism_binary(home / ".cache" / "beamport" / "bin")
    assert serve().prism == built
    elsewhere = prism_binary(tmp_path / "elsewhere")
    environ.set(BEAMPORT_PRISM_BIN_DIR=str(elsewhere.parent))
    assert serve().prism == elsewhere
    assert find_prism({"PATH": str(tmp_path / "nothing"), "HOME": str(tmp_path / "nobody")}) is None


def test_building_settings_leaves_the_environment_alone(environ, tmp_path):
    environ.set(**FLINK_ENV, BEAMPORT_PRISM="none", BEAMPORT_DATA_DIR=str(tmp_path))
    before = dict(os.environ)
    settings = Settings(flink={"master": "flag-master:1"}, prism=str(prism_binary(tmp_path / "bin")))
    assert settings.flink.master == "flag-master:1" and settings.prism is not None
    assert dict(os.environ) == before


def test_local_workers_get_the_servers_engines_as_flags_not_its_environment(monkeypatch, environ, tmp_path):
    """What LocalWorkerPool passes `beamport worker` rebuilds the server's engine settings, in an environment
    without BEAMPORT_* variables (those the server's flags overrode must not come back) or the server's key."""
    from beamport.worker import pool as pool_module

    binary = prism_binary(tmp_path / "bin")
    server = Settings(
        flink={"master": "m:1", "job_server": "j:2", "sdk_pool": "p:3", "shared_dir": str(tmp_path / "shared")},
        prism=str(binary),
        sandbox="off",
        job_limits={"memory_bytes": "1G", "processes": 64},
    )
    environ.set(**FLINK_ENV, BEAMPORT_PRISM="none", GOOGLE_APPLICATION_CREDENTIALS="/the/operators/key.json")
    spawned = []

    class FakePopen:
        pid = 12345

        def __init__(self, args, env, **_):
            spawned.append((args, env))

    monkeypatch.setattr(pool_module.subprocess, "Popen", FakePopen)
    pool = pool_module.LocalWorkerPool(
        None, "http://127.0.0.1:1", 1, [tmp_path], tmp_path, engine_flags=server.worker_flags()
    )
    pool._spawn()
    [(args, env)] = spawned
    assert not [name for name in env if name.startswith("BEAMPORT_")]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env

    import beamport.worker.harness

    made = []

    class FakeWorker:
        def __init__(self, *args, **kwargs):
            made.append(kwargs)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(beamport.worker.harness, "Worker", FakeWorker)
    for name in list(os.environ):
        if name.startswith("BEAMPORT_"):
            monkeypatch.delenv(name)
    result = CliRunner().invoke(app, args[args.index("worker") :])
    assert result.exit_code == 0, result.output
    engines = made[0]["engines"]
    assert engines.for_executor() == server.for_executor()
    assert (engines.sandbox, engines.job_limits) == ("off", server.job_limits)
    assert server.job_limits.memory_bytes == 1 << 30


def test_a_remote_worker_takes_flags_over_the_same_variables(monkeypatch, environ, tmp_path):
    import beamport.worker.harness

    made = []
    monkeypatch.setattr(
        beamport.worker.harness, "Worker", lambda *a, **kw: made.append(kw) or type("W", (), {"run": lambda s: 0})()
    )
    environ.set(**FLINK_ENV, BEAMPORT_PRISM="none", BEAMPORT_SANDBOX="off")
    worker = ["worker", "--endpoint", "http://service:8080", "--data-dir", str(tmp_path)]
    assert CliRunner().invoke(app, worker).exit_code == 0
    engines = made[-1]["engines"]
    assert engines.flink.master == "env-master:8081" and engines.prism is None and engines.sandbox == "off"
    binary = prism_binary(tmp_path / "bin")
    assert CliRunner().invoke(app, [*worker, *FLINK_FLAGS, "--prism", str(binary)]).exit_code == 0
    engines = made[-1]["engines"]
    assert engines.flink.master == "flag-master:1" and engines.prism == binary.resolve()
    assert CliRunner().invoke(app, [*worker, "--flink-master", "m:1"]).exit_code == 0
    assert made[-1]["engines"].flink.sdk_pool == "env-pool:50000", "the other two endpoints from the environment"
    environ.set(BEAMPORT_FLINK_SDK_POOL="")
    missing = CliRunner().invoke(app, worker)
    assert missing.exit_code == 2 and "missing --flink-sdk-pool (BEAMPORT_FLINK_SDK_POOL)" in missing.output


def test_the_executor_runs_the_engines_of_its_assignment(environ, tmp_path):
    from beamport.worker.api import WorkerApiError
    from beamport.worker.executor import make_engine

    binary = prism_binary(tmp_path / "bin")
    engines = EngineSettings(
        flink={"master": "m:1", "job_server": "j:2", "sdk_pool": "p:3"}, prism=str(binary)
    ).for_executor()
    flink = make_engine({"engine": "flink", "restoreFrom": "/snapshots/s1"}, 1, engines)
    assert flink.config.master == "m:1" and flink.restore_from == "/snapshots/s1"
    assert make_engine({"engine": "prism"}, 1, engines).binary == binary.resolve()
    nothing = EngineSettings(prism="none").for_executor()
    with pytest.raises(WorkerApiError, match="no Flink cluster.*--flink-master"):
        make_engine({"engine": "flink"}, 1, nothing)
    with pytest.raises(WorkerApiError, match="no Prism binary.*--prism PATH"):
        make_engine({"engine": "prism"}, 1, nothing)
