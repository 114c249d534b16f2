"""The README's `docker stack deploy` and Docker Compose recipes, run as written.

The recipe lines are read from README.md and run by bash in a copy of the checkout's layout
(stacks/swarmrun.yml one directory below where `redis_password` is written). Only the names a
test must own are substituted: the image, the stack/project name, the port and the sweep file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until, write_sweep
from tests.swarm.conftest import REDIS_IMAGE, Stack, compose_workers, ping

SWEEP = """
name: recipe
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.01]
  i: {range: [0, 30]}
"""


def recipe_blocks() -> list[list[str]]:
    """The two sh blocks of the README section on the stack file, as lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### The stack file", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the README section should hold the swarm and the compose recipe"
    return [[line for line in b.splitlines() if line.strip()] for b in blocks]


def checkout(tmp_path: Path) -> Path:
    top = tmp_path / "checkout"
    (top / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "stacks" / "swarmrun.yml", top / "stacks" / "swarmrun.yml")
    (top / "examples" / "quickstart").mkdir(parents=True)
    write_sweep(top / "examples" / "quickstart", SWEEP, "sweep.yaml")
    return top


def substitute(line: str, stack: Stack, name: str) -> str:
    line = line.replace("oscillator:1", stack.image)
    line = re.sub(r"\bsweeps\b", name, line)
    line = line.replace("127.0.0.1:6379", f"127.0.0.1:{stack.port}")
    return line.replace("swarmrun status --watch", "swarmrun status --watch --interval 0.5")


def bash(line: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-ec", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def recipe_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k != "SWARMRUN_STACK"}
    env.update(SWARMRUN_REDIS_IMAGE=REDIS_IMAGE, SWARMRUN_REDIS_PORT=str(stack.port))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # this venv's `swarmrun`
    return env


@pytest.mark.swarm
@pytest.mark.timeout(600)
def test_docker_stack_deploy_recipe_as_written(stack: Stack, tmp_path: Path) -> None:
    top = checkout(tmp_path)
    env = recipe_env(stack)
    lines = recipe_blocks()[0]
    try:
        for line in lines:
            r = bash(substitute(line, stack, stack.name), top, env)
            assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        assert re.search(r"30/30 points done: 30 ok", r.stderr), r.stderr
    finally:
        subprocess.run(["docker", "stack", "rm", stack.name], capture_output=True, timeout=120)


@pytest.mark.swarm
@pytest.mark.timeout(600)
def test_docker_compose_recipe_as_written(stack: Stack, tmp_path: Path) -> None:
    top = checkout(tmp_path)
    env = recipe_env(stack)
    project = f"{stack.name}c"
    setup = recipe_blocks()[0][0]  # openssl rand -hex 16 > redis_password
    lines = recipe_blocks()[1]
    assert bash(setup, top, env).returncode == 0
    compose = ["docker-compose", "-f", "stacks/swarmrun.yml", "-p", project]
    try:
        exported: dict[str, str] = {}
        for line in lines:
            line = substitute(line, stack, project)
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exported[name] = bash(f"printf %s {value}", top, env).stdout
                env = {**env, **exported}
                if name == "SWARMRUN_REDIS_URL":
                    url = exported[name]
                    wait_until(lambda: ping(url), 90, message="compose Redis")  # noqa: B023
                continue
            r = bash(line, top, env)
            assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        workers = compose_workers(project)
        assert len(workers) == 4  # the last line scales to 4
    finally:
        subprocess.run([*compose, "down", "-v"], cwd=top, env=env, capture_output=True, timeout=180)
