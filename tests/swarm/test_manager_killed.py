"""The manager killed on a swarm: SIGKILL `swarmrun run` mid-sweep, run the same command again:
it resumes, finishes, and the results file holds every point once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import read_csv, wait_until, write_sweep
from tests.swarm.conftest import Stack, cli

pytestmark = pytest.mark.swarm

SWEEP = """
name: manager-killed
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.05]
  i: {range: [0, 200]}
"""


@pytest.mark.timeout(600)
def test_manager_sigkilled_mid_sweep_resumes_on_rerun(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "2", *stack.options(), cwd=tmp_path).returncode == 0
    path = write_sweep(tmp_path, SWEEP)
    out = tmp_path / "out.csv"
    args = [sys.executable, "-m", "swarmrun", "run", str(path), "-o", str(out), *stack.options()]
    run = subprocess.Popen(
        args, cwd=tmp_path, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        queue = SweepQueue(redis.Redis.from_url(stack.backend().redis_url()), "swarmrun")

        def done() -> int:
            sids = queue.sweep_ids()
            return queue.progress(sids[0]).done if sids else 0

        wait_until(lambda: done() >= 40, 120, message="a fifth of the points done")
        run.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if run.stderr:
            run.stderr.close()
    killed = time.monotonic()
    again = cli(stack, "run", str(path), "-o", str(out), *stack.options(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "200/200 points done: 200 ok" in again.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(200))
    duplicates = again.stderr.split(" duplicate executions")[0].rsplit(" ", 1)[1]
    print(f"swarm manager SIGKILLed: rerun took {time.monotonic() - killed:.1f}s; lost=0, dups={duplicates}")
