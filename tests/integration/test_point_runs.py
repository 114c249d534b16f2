"""`show` lists every execution of a point, `run` keeps a running count per error, a sweep resumed
from another sweep's results gets their files, and local workers move files straight into the
results directory: whole sweeps through the CLI with a real Redis and real worker processes."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import SweepQueue
from tests.conftest import ROOT, Processes, read_csv, wait_until, write_sweep

pytestmark = pytest.mark.timeout(180)


def expected_bin(index: int, size: int) -> bytes:
    return (hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1))[:size]


@pytest.mark.parametrize("chunk", ["chunk: 1", "chunk: 8"], ids=["first-of-chunk", "mid-chunk"])
def test_show_lists_an_execution_killed_right_after_it_started(
    procs: Processes, tmp_path: Path, rconn: redis.Redis, chunk: str
) -> None:
    """SIGKILL as soon as the point has started (no wait for a heartbeat): `show` still lists that
    execution (worker, node, start; `running`, it never ended) beside the one that was recorded."""
    flag = tmp_path / "hung.pid"
    path = write_sweep(
        tmp_path,
        f"""
task: {{call: "fixtures.tasks:write_then_hang"}}
{chunk}
params:
  hang: [3]
  flag: ["{flag}"]
  i: {{range: [0, 6]}}
""",
    )
    sid = procs.cli("submit", str(path)).stdout.strip()
    victim = procs.worker()
    wait_until(flag.exists, 60, interval=0.005, message="point 3 started")
    if chunk == "chunk: 8":
        time.sleep(0.2)  # points 0-2 were fast: point 3 is announced by a thread looking every 20 ms
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    procs.worker()
    wait_until(lambda: SweepQueue(rconn, "swarmrun").progress(sid).complete, 90, message="sweep done")
    show = procs.cli("show", sid, "3")
    assert show.returncode == 0, show.stderr
    assert "executions (2):" in show.stdout, show.stdout
    lines = [line for line in show.stdout.splitlines() if " worker " in line]
    killed = [line for line in lines if " running " in line]
    assert len(killed) == 1 and "(recorded)" not in killed[0], show.stdout
    assert sum("(recorded)" in line for line in lines) == 1
    # Points run by the second worker only: announced or not, none is left `running`. (Points 0-2
    # of the killed worker may be: they ended, but their results died with it, unflushed.)
    for i in (4, 5):
        other = procs.cli("show", sid, str(i))
        assert " running " not in other.stdout, other.stdout


def test_run_prints_the_running_count_of_each_error_group_as_it_grows(
    procs: Processes, tmp_path: Path
) -> None:
    (tmp_path / "slowfail.py").write_text(
        "import time\n"
        "def run(x):\n"
        "    time.sleep(0.05)\n"
        "    if x % 2:\n"
        "        raise RuntimeError('odd')\n"
        "    if x % 10 == 4:\n"
        "        raise KeyError('four')\n"
        "    return x\n"
    )
    path = write_sweep(tmp_path, 'task: {call: "slowfail:run"}\nchunk: 4\nparams: {x: {range: [0, 160]}}\n')
    began = time.monotonic()
    r = procs.cli("run", str(path), "-w", "1")
    took = time.monotonic() - began
    assert r.returncode == 1
    err = r.stderr.splitlines()
    assert len([line for line in err if line.startswith("error at point")]) == 2, r.stderr
    odd = [
        int(line.split()[3]) for line in err if line.startswith("errors so far:") and "RuntimeError" in line
    ]
    assert len(odd) >= 2, r.stderr  # the count is printed again as it grows ...
    assert odd == sorted(odd) and len(set(odd)) == len(odd) and odd[-1] <= 80
    assert len([line for line in err if line.startswith("errors so far:")]) <= 2 * (
        took / 2 + 1
    )  # ... not flooding
    assert "  80 x RuntimeError: odd" in r.stderr and "  16 x KeyError: 'four'" in r.stderr
