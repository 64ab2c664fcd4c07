"""Beamport's boot program for the SDK workers of Flink and Prism (beamport/engine/sdk_boot.py)."""

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
