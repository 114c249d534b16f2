"""The dashboard over a deployed stack: its Redis, and the stack's workers per node."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until, write_sweep
from tests.swarm.conftest import Stack, cli
from tests.swarm.test_swarm import NAP


@pytest.mark.swarm
@pytest.mark.timeout(400)
def test_dashboard_shows_the_stacks_workers_per_node(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "2", *stack.options(), cwd=tmp_path).returncode == 0
    path = write_sweep(tmp_path, NAP.format(seconds=0.05, points=200))
    sid = cli(stack, "submit", str(path), cwd=tmp_path).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "dashboard", "--port", str(port)],
        env=stack.env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        node = stack.client.info()["Name"]

        def sweep() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sweeps/{sid}", timeout=5) as r:  # noqa: S310
                    return json.loads(r.read())
            except OSError:
                return None

        state = wait_until(
            lambda: (s := sweep()) and s["nodes"] and s, 120, message="the dashboard's sweep view"
        )
        assert state["nodes"] == [{"node": node, "running": 2}]
        assert state["workers"] == {"running": 2, "desired": 2}
        wait_until(lambda: (s := sweep()) and s["done"] == 200, 120, message="the sweep to complete")
    finally:
        proc.kill()
        proc.wait()
