"""Cluster fixtures: a swarm of three docker-in-docker nodes (a manager, two workers) that the CLI
drives through DOCKER_HOST=tcp://<manager-ip>:2375, with the worker image on every node.

The test worker image is built on this machine's engine and copied into the nodes with
swarmrun's own `distribute`; the Redis image goes to the manager only (Redis is pinned there).
Everything carries `swarmrun.test=<session>`; the cluster is removed by its own label at the end.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import docker
import pytest

from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.backend import SwarmBackend
from swarmrun.backends.swarm.stack import StackConfig
from swarmrun.execution.connection import connect
from swarmrun.execution.queue import SweepQueue
from tests.cluster.harness import NODE_IMAGE, Cluster, Node
from tests.conftest import build_fixture_image, docker_available, require, run_cli, swarmrun_env

SESSION = uuid.uuid4().hex[:8]
TEST_LABEL = "swarmrun.test"
BASE_IMAGE = os.environ.get("SWARMRUN_TEST_BASE_IMAGE", "swarmrun-base:bookworm")
REDIS_IMAGE = os.environ.get("SWARMRUN_TEST_REDIS_IMAGE", "swarmrun-redis:bookworm")
REGISTRY_IMAGE = os.environ.get("SWARMRUN_TEST_REGISTRY_IMAGE", "swarmrun-registry:bookworm")
_ports = itertools.count(16379)
_REPORT: list[str] = []


def report(line: str) -> None:
    """A reliability line, repeated in the summary at the end of the test run."""
    _REPORT.append(line)


def machine() -> str:
    """What the numbers were measured on: CPU model and count, memory."""
    model = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024**2:.0f} GiB"
    return f"{os.cpu_count()} x {model}{memory}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("swarmrun cluster reliability")
        terminalreporter.write_line(f"machine: {machine()}")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def host_engine() -> Iterator[docker.DockerClient]:
    """This machine's Docker engine, which runs the node containers."""
    require(docker_available(), "no Docker engine answers")
    client = engine.connect()
    for image in (BASE_IMAGE, REDIS_IMAGE, NODE_IMAGE, REGISTRY_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            require(False, f"image {image} is missing (run .ci/images)")
    yield client
    for image in client.images.list(filters={"label": f"{TEST_LABEL}={SESSION}"}):
        with suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)
    client.close()


@pytest.fixture(scope="session")
def cluster_image(host_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The worker image with tests/fixtures as task code, built on this machine as a user would."""
    return build_fixture_image(
        host_engine, f"swarmrun-worker:cluster-{SESSION}", BASE_IMAGE, {TEST_LABEL: SESSION}, tmp_path_factory
    )


@pytest.fixture(scope="session")
def cluster(host_engine: docker.DockerClient, cluster_image: str) -> Iterator[Cluster]:
    c = Cluster(host_engine, f"srt{SESSION}", workers=2, labels={TEST_LABEL: SESSION})
    try:
        c.up()
        c.load_images([cluster_image])
        c.load_images([REDIS_IMAGE], role="manager")
        yield c
    finally:
        c.down()


class ClusterStack:
    """A swarmrun stack on the test cluster, and the environment a user's CLI has to drive it."""

    def __init__(self, cluster: Cluster, image: str, home: Path) -> None:
        self.cluster = cluster
        self.name = f"cs{uuid.uuid4().hex[:6]}"
        self.image = image
        self.home = home
        self.port = next(_ports)
        self.env = swarmrun_env(
            None, home, DOCKER_HOST=cluster.manager.url, SWARMRUN_STACK=self.name, SWARMRUN_HEARTBEAT_TTL="5"
        )
        self.config = StackConfig(
            name=self.name,
            image=image,
            redis_image=REDIS_IMAGE,
            redis_port=self.port,
            heartbeat_ttl=5,
            labels=((TEST_LABEL, SESSION),),
        )

    def options(self, image: str | None = None) -> list[str]:
        """The CLI options that shape this stack (for `up` and `run`)."""
        return [
            "--image",
            image or self.image,
            "--redis-image",
            REDIS_IMAGE,
            "--redis-port",
            str(self.port),
            "--label",
            f"{TEST_LABEL}={SESSION}",
        ]

    def cli(
        self, *args: str, cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(args, env=env or self.env, cwd=cwd, timeout=timeout)

    def spawn(self, *args: str, cwd: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "swarmrun", *args],
            env=self.env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def backend(self) -> SwarmBackend:
        return SwarmBackend(
            self.cluster.manager_client(),
            self.config,
            home=self.home,
            environ=self.env,
            extra_labels={TEST_LABEL: SESSION},
        )

    def queue(self, *, resilient: bool = True) -> SweepQueue:
        return SweepQueue(connect(self.backend().redis_url(), resilient=resilient), "swarmrun")

    def worker_containers(self) -> list[tuple[Node, docker.models.containers.Container]]:
        return self.cluster.node_containers(f"{self.name}_worker")

    def tasks(self) -> list[dict[str, Any]]:
        """The worker service's tasks, as the manager reports them."""
        with closing(self.cluster.manager_client()) as m:
            return list(m.services.get(f"{self.name}_worker").tasks())

    def remove(self) -> None:
        backend = self.backend()
        try:
            backend.remove(volumes=True)
        finally:
            backend.client.close()


@pytest.fixture
def cstack(cluster: Cluster, cluster_image: str, tmp_path: Path) -> Iterator[ClusterStack]:
    s = ClusterStack(cluster, cluster_image, tmp_path / "home")
    yield s
    s.remove()
