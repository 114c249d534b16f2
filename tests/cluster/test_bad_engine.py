"""An engine that cannot run the stack: a swarm worker, or one in no swarm at all. One line each."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.cluster.conftest import SESSION, TEST_LABEL, ClusterStack
from tests.cluster.harness import Cluster, remove
from tests.conftest import write_sweep

pytestmark = pytest.mark.cluster

SWEEP = """
name: bad-engine
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0]
  i: {range: [0, 5]}
"""


@pytest.fixture(scope="module")
def standalone(host_engine: docker.DockerClient) -> Iterator[Cluster]:
    """One engine that never joined a swarm."""
    name = f"srt{SESSION}solo"
    solo = Cluster(host_engine, name, workers=0, labels={TEST_LABEL: SESSION})
    try:
        yield solo.up(swarm=False)
    finally:
        remove(host_engine, name)


def _one_line(r: subprocess.CompletedProcess[str]) -> None:
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["up"], ["scale", "2"], ["run", "SWEEP", "--backend", "swarm"]])
def test_a_swarm_worker_is_not_a_manager(command: list[str], cstack: ClusterStack, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SWEEP)
    env = {**cstack.env, "DOCKER_HOST": cstack.cluster.worker_nodes[0].url}
    r = cstack.cli(
        *[str(path) if a == "SWEEP" else a for a in command],
        *(cstack.options() if command == ["up"] else []),
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 5, (r.returncode, r.stderr)
    _one_line(r)
    assert "is a swarm worker, not a manager" in r.stderr


def test_an_engine_in_no_swarm(standalone: Cluster, cstack: ClusterStack, tmp_path: Path) -> None:
    # No swarm and no Kubernetes cluster either (a test cluster may be up: point KUBECONFIG away)
    env = {**cstack.env, "DOCKER_HOST": standalone.manager.url, "KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    env.pop("SWARMRUN_STACK")
    up = cstack.cli("up", *cstack.options(), cwd=tmp_path, env=env)
    assert up.returncode == 5, up.stderr
    _one_line(up)
    assert "not part of a swarm (run `docker swarm init`)" in up.stderr

    # `--backend auto` runs locally instead, and says why
    path = write_sweep(tmp_path, SWEEP)
    auto = cstack.cli("run", str(path), "--backend", "auto", "-w", "2", "-q", cwd=tmp_path, env=env)
    assert auto.returncode == 0, auto.stderr
    assert "backend: local" in auto.stderr
