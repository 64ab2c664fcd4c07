"""Beamport's boot program for the SDK workers of Flink and Prism (beamport/engine/sdk_boot.py)."""

import subprocess
import sys

from beamport.engine.sdk_boot import fetch_artifacts


def test_a_worker_loads_no_staged_file_of_an_earlier_worker_of_its_name(tmp_path):
    """A Flink SDK pool restarted over the same directory numbers its workers from 1 again: a job without a main
    session of its own once loaded the one an earlier worker of the same name had fetched (and failed on its
    imports). The staged directory is the worker's job's alone."""
    from apache_beam.portability.api import beam_provision_api_pb2

    stale = tmp_path / "staged" / "pickled_main_session"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier job's main session")
    assert fetch_artifacts(beam_provision_api_pb2.ProvisionInfo(), "", str(tmp_path)) == []
    assert not stale.exists()


def test_launchers_read_fn_api_runners_endpoints_without_beams_protos():
    """The Java and Go launchers read FnApiRunner's endpoint variables without importing apache_beam (2.5 s before
    the harness starts): what they read is the url Beam's text format wrote, and importing them loads no Beam."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import text_format

    from beamport.engine.harness_process import descriptor_url

    for url in ("localhost:37581", "127.0.0.1:5", "[::1]:9", "unix:///tmp/a b/sock"):
        assert descriptor_url(text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))) == url
    assert descriptor_url("") == ""
    loaded = "import sys, beamport.engine.java_boot, beamport.engine.go_boot; print('apache_beam' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True).stdout.strip() == "False"
