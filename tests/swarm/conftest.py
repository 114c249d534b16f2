"""Swarm fixtures: the local engine in Swarm mode, a worker image built from tests/, stacks.

Everything the tests create carries the label `swarmrun.test=<session id>` (images, services,
networks, secrets, volumes) and is removed at teardown by that label, whatever a test left.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.backend import SwarmBackend
from swarmrun.backends.swarm.stack import NAMESPACE_LABEL, StackConfig
from tests.conftest import build_fixture_image, docker_available, free_port, require, run_cli, swarmrun_env

SESSION = uuid.uuid4().hex[:8]
TEST_LABEL = "swarmrun.test"
BASE_IMAGE = os.environ.get("SWARMRUN_TEST_BASE_IMAGE", "swarmrun-base:bookworm")
REDIS_IMAGE = os.environ.get("SWARMRUN_TEST_REDIS_IMAGE", "swarmrun-redis:bookworm")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    require(docker_available(), "no Docker engine answers")
    client = engine.connect()
    state, manager = engine.swarm_state(client)
    require(state == "active" and manager, "the Docker engine is not a swarm manager")
    for image in (BASE_IMAGE, REDIS_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            require(False, f"base image {image} is missing (run .ci/images)")
    yield client
    remove_labelled(client, f"{TEST_LABEL}={SESSION}")
    client.close()


def remove_labelled(client: docker.DockerClient, label: str) -> None:
    """Remove every service, container, network, secret, volume and image carrying `label`."""
    services = client.services.list(filters={"label": label})
    for service in services:
        service.remove()

    def leftovers() -> list[dict]:
        # A service's containers carry its labels only when the stack put them there too, so
        # look for them by service id as well: networks they are attached to cannot go before them.
        found = client.api.containers(all=True, filters={"label": label})
        for service in services:
            found += client.api.containers(
                all=True, filters={"label": f"com.docker.swarm.service.id={service.id}"}
            )
        return found

    deadline = time.monotonic() + 60
    while (left := leftovers()) and time.monotonic() < deadline:
        for container in left:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(container["Id"], force=True)
        time.sleep(0.5)
    for kind in (client.networks, client.secrets, client.volumes):
        for item in kind.list(filters={"label": label}):
            for _ in range(20):
                try:
                    item.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    time.sleep(0.5)
    for image in client.images.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


@pytest.fixture(scope="session")
def worker_image(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A worker image holding swarmrun and tests/fixtures (the task code), built like a user would."""
    return build_fixture_image(
        docker_client, f"swarmrun-worker:test-{SESSION}", BASE_IMAGE, {TEST_LABEL: SESSION}, tmp_path_factory
    )


class Stack:
    """A deployed test stack and the environment the CLI needs to drive it."""

    def __init__(self, client: docker.DockerClient, image: str, home: Path, redis_url: str) -> None:
        self.name = f"srt{SESSION}{uuid.uuid4().hex[:4]}"
        self.client = client
        self.image = image
        self.home = home
        self.port = free_port()
        self.env = swarmrun_env(None, home, SWARMRUN_STACK=self.name, SWARMRUN_HEARTBEAT_TTL="5")
        self.config = StackConfig(
            name=self.name,
            image=image,
            redis_image=REDIS_IMAGE,
            redis_port=self.port,
            heartbeat_ttl=5,
            labels=((TEST_LABEL, SESSION),),
        )

    def options(self) -> list[str]:
        """The CLI options that shape this stack (for `up` and `run`)."""
        return [
            "--image",
            self.image,
            "--redis-image",
            REDIS_IMAGE,
            "--redis-port",
            str(self.port),
            "--label",
            f"{TEST_LABEL}={SESSION}",
        ]

    def backend(self) -> SwarmBackend:
        return SwarmBackend(
            self.client, self.config, home=self.home, environ=self.env, extra_labels={TEST_LABEL: SESSION}
        )

    def worker_containers(self) -> list[docker.models.containers.Container]:
        return self.client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={self.name}_worker"}, ignore_removed=True
        )


@pytest.fixture
def stack(docker_client: docker.DockerClient, worker_image: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(docker_client, worker_image, tmp_path / "home", "")
    yield s
    remove_labelled(docker_client, f"{NAMESPACE_LABEL}={s.name}")


def cli(
    stack: Stack, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, env=env or stack.env, cwd=cwd, timeout=timeout)


def ping(url: str) -> redis.Redis | None:
    """A client of the Redis at `url` once it answers, else None (for `wait_until`)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        return client
    except (redis.ConnectionError, redis.ResponseError):
        return None


def compose_workers(project: str) -> list[str]:
    """Ids of the running worker containers of a Docker Compose project."""
    return subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            "label=com.docker.compose.service=worker",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
