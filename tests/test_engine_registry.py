"""The engine registry (beamport.engine.registry): what each engine can do, which engines a host's settings give it,
how the executor builds them, and that registering them imports no Beam. No server is started here."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beamport.config import EngineSettings
from beamport.engine import registry
from beamport.engine.base import Engine
from beamport.engine.java_boot import harness_jars
from beamport.errors import ApiError
from beamport.service import engines

FLINK = {"master": "m:1", "job_server": "j:2", "sdk_pool": "p:3"}


def prism_binary(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    binary = where / "prism"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return binary


def test_each_engine_declares_what_it_can_do():
    table = {
        spec.name: (spec.batch, spec.streaming, spec.keeps_state, spec.drains, spec.stops_outside, spec.sdks)
        for spec in registry.ENGINES
    }
    every_sdk = frozenset({registry.PYTHON, registry.GO, registry.JAVA})
    assert table == {
        "embedded": (True, False, False, frozenset(), False, every_sdk),
        # Flink runs Java and Go in workers its SDK worker pool starts. Both drain every SDK's jobs whose sources are
        # Beamport's (the service refuses a Java or Go job's drain when a source is its SDK's own).
        "flink": (True, True, True, every_sdk, True, every_sdk),
        "prism": (True, True, False, every_sdk, False, every_sdk),
    }
    assert registry.names() == ["embedded", "flink", "prism"]
    assert registry.BATCH_DEFAULT is registry.get("embedded")
    assert registry.keeping_state() == [registry.get("flink")]
    assert registry.titles(registry.ENGINES) == "embedded, Flink or Prism"


def test_unknown_names_are_refused_clearly():
    with pytest.raises(registry.UnknownEngine, match=r"No engine is named 'spark': .* embedded, flink, prism\."):
        registry.get("spark")
    with pytest.raises(registry.UnknownEngine, match="No engine is named None"):
        registry.get(None)
    assert registry.find("spark") is None and registry.find(None) is None
    assert not engines.keeps_state("spark") and not engines.keeps_state(None) and engines.keeps_state("flink")

    with pytest.raises(ApiError) as refused:  # a job's label
        engines.check_engine({"labels": {engines.ENGINE_LABEL: "spark"}}, {"embedded"})
    assert refused.value.status == "INVALID_ARGUMENT"
    assert "beamport_engine='spark' names no engine: use one of embedded, flink, prism" in refused.value.message
    with pytest.raises(ApiError) as refused:  # an engine this server lacks: how to give it one
        engines.check_engine({"labels": {engines.ENGINE_LABEL: "prism"}}, {"embedded", "flink"})
    assert refused.value.status == "FAILED_PRECONDITION" and "no Prism binary" in refused.value.message

    from beamport.worker.api import WorkerApiError
    from beamport.worker.executor import make_engine

    with pytest.raises(WorkerApiError, match="cannot run the work item: No engine is named 'spark'"):
        make_engine({"engine": "spark"}, 1, {})


def test_a_hosts_settings_give_it_its_engines(tmp_path, monkeypatch):
    for name in [name for name in os.environ if name.startswith("BEAMPORT_")]:
        monkeypatch.delenv(name)  # only what the test gives
    binary = prism_binary(tmp_path / "bin")

    def on(**settings):
        host = EngineSettings(**settings)
        streaming = registry.default_streaming(host)
        control = registry.state_control(host)
        return (
            [spec.name for spec in registry.available(host)],
            streaming and streaming.name,
            control and control.name,
            registry.host_configs(host),
        )

    # The embedded engine and Prism take the Java harness's jars from the worker's host (whatever it finds there).
    embedded = {"java_harness_jars": harness_jars()}
    assert on(prism="none") == (["embedded"], None, None, {"flink": None, "prism": None, "embedded": embedded})
    assert on(prism=str(binary)) == (
        ["embedded", "prism"],
        "prism",
        None,
        {"flink": None, "prism": {"binary": str(binary), **embedded}, "embedded": embedded},
    )
    names, streaming, control, configs = on(prism=str(binary), flink=FLINK)
    assert (names, streaming, control) == (["embedded", "flink", "prism"], "flink", "flink")
    assert configs["flink"] == {
        **FLINK,
        "shared_dir": "/tmp/beamport-flink",
        "beam_on_cluster": False,
        "cluster_dir": None,
    }
    assert configs["prism"]["binary"] == str(binary)

    # Which engine runs a job: its label, else the server's default for its type.
    assert engines.engine_of({"type": "JOB_TYPE_BATCH"}, "flink") == "embedded"
    assert engines.engine_of({"type": "JOB_TYPE_STREAMING"}, "flink") == "flink"
    assert engines.engine_of({"type": "JOB_TYPE_STREAMING"}, None) is None
    assert engines.spec_of({"labels": {engines.ENGINE_LABEL: "prism"}}, "flink") is registry.get("prism")


def test_a_job_goes_where_its_sdk_runs(monkeypatch):
    """A job that names no engine runs on the default for its type: every engine runs Python, Java and Go, so a
    batch job of any SDK on the embedded engine, a streaming one on the streaming engine (or it waits). Were the
    default not to run its SDK (its user agent's), the job would go to the first engine that does, and a server
    without that engine would refuse it at create."""

    def job(sdk: str, job_type: str = "JOB_TYPE_BATCH") -> dict:
        return {
            "type": job_type,
            "environment": {"userAgent": {"name": f"Apache Beam SDK for {sdk}", "version": "2.77.0"}},
        }

    for sdk in ("Python", "Java", "Go"):
        assert engines.engine_of(job(sdk), "flink") == "embedded"
        assert engines.engine_of(job(sdk), None) == "embedded"
        assert engines.engine_of(job(sdk, "JOB_TYPE_STREAMING"), "flink") == "flink"
        assert engines.engine_of(job(sdk, "JOB_TYPE_STREAMING"), "prism") == "prism"
        assert engines.engine_of(job(sdk, "JOB_TYPE_STREAMING"), None) is None
        engines.check_engine(job(sdk), {"embedded"})

    # An embedded engine without Go: a Go batch job goes to the first engine that runs Go (Flink), a server
    # without it refuses the job; a label still wins.
    without_go = dataclasses.replace(registry.EMBEDDED, sdks=frozenset({registry.PYTHON, registry.JAVA}))
    monkeypatch.setattr(registry, "BATCH_DEFAULT", without_go)
    monkeypatch.setattr(registry, "ENGINES", (without_go, registry.FLINK, registry.PRISM))
    assert engines.engine_of(job("Go"), None) == "flink"
    assert engines.engine_of(job("Java"), None) == "embedded"
    labelled = {**job("Go"), "labels": {engines.ENGINE_LABEL: "embedded"}}
    assert engines.engine_of(labelled, None) == "embedded"  # (staging then refuses it, naming the engines that do)
    engines.check_engine(job("Go"), {"embedded", "flink"})
    with pytest.raises(ApiError) as refused:
        engines.check_engine(job("Go"), {"embedded", "prism"})
    assert refused.value.status == "FAILED_PRECONDITION"
    assert "This is a Beam Go pipeline: Beamport runs those on Flink" in refused.value.message
    assert "scripts/flink-cluster" in refused.value.message


def test_the_executor_builds_each_engine_and_its_answers_match_its_declaration(tmp_path):
    from beamport.worker.executor import make_engine

    binary = prism_binary(tmp_path / "bin")
    configs = registry.host_configs(EngineSettings(prism=str(binary), flink=FLINK))
    for spec in registry.ENGINES:
        engine = make_engine({"engine": spec.name}, 1, configs)
        assert isinstance(engine, Engine)
        assert engine.request_drain() is bool(spec.drains), spec.name
        if spec.stops_outside:
            assert type(engine).stop is not Engine.stop, spec.name
    assert type(make_engine({}, 2, {})) is type(make_engine({"engine": None}, 2, {}))  # the batch engine
    assert make_engine({}, 2, {}).default_workers == 2


# Imports the registry and asks it everything a server asks (the state control of Flink included), then lists the
# modules imported.
ASK_THE_REGISTRY = """
import sys
from beamport.config import EngineSettings
from beamport.engine import registry
settings = EngineSettings(prism="none", flink={"master": "m:1", "job_server": "j:2", "sdk_pool": "p:3"})
registry.available(settings), registry.default_streaming(settings), registry.host_configs(settings)
assert registry.state_control(settings).name == "flink"
print(*sys.modules, sep="\\n")
"""


def test_registering_the_engines_imports_no_beam():
    environ = {name: value for name, value in os.environ.items() if not name.startswith("BEAMPORT_")}
    done = subprocess.run(
        [sys.executable, "-c", ASK_THE_REGISTRY], capture_output=True, text=True, check=True, env=environ
    )
    modules = done.stdout.splitlines()
    assert "beamport.engine.registry" in modules and "beamport.engine.flink" in modules
    assert [m for m in modules if m.split(".")[0] == "apache_beam"] == []
    assert "beamport.engine.prism" not in modules and "beamport.engine.embedded" not in modules
