"""A worker's CPU samples count the CPU time of its processes once they ended: waited for by the harness, or
ended in the sandbox, whose bubblewrap passes none of its child's time on to the harness (a job's usage would
shrink at its end). Real processes that burn real CPU time."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from beamport.sandbox import Sandbox
from beamport.worker.host import HostProbe

BURN_S = 0.6
BURN = [sys.executable, "-c", f"import time\nt = time.process_time()\nwhile time.process_time() - t < {BURN_S}: pass"]


def sandboxed(argv: list[str]) -> list[str]:
    reason = Sandbox().unavailable
    if reason:
        pytest.skip(reason)
    return [
        "bwrap",
        "--unshare-pid",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--",
        *argv,
    ]


@pytest.mark.parametrize("wrap", [list, sandboxed], ids=["waited", "in-a-sandbox"])
def test_the_cpu_time_of_a_process_that_ended_stays_counted(tmp_path, wrap):
    probe = HostProbe(tmp_path)
    before = probe.cpu_seconds()
    process = subprocess.Popen(wrap(BURN), start_new_session=True)
    while process.poll() is None:  # as the harness does while its executor runs
        probe.look(every_s=0.05)
        time.sleep(0.01)
    used = probe.cpu_seconds() - before
    # What it burned, counted once (its interpreter's start adds a little), up to the last look before its end.
    assert BURN_S - 0.1 <= used <= BURN_S + 0.4, used
    assert probe.cpu_seconds() - before == pytest.approx(used, abs=0.05)  # and it stays
