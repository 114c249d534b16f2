"""The Docker engine adapter: connect as docker itself does (DOCKER_HOST, TLS variables) and
translate the SDK's exceptions into swarmrun's, so the CLI prints one line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import docker
import docker.errors
import requests

from swarmrun.errors import DockerUnavailable, NotASwarmManager


def connect(environ: Mapping[str, str] = os.environ, *, timeout: int = 120) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (the local socket by default); checks it answers."""
    try:
        client = docker.DockerClient(
            **docker.utils.kwargs_from_env(environment=dict(environ)), timeout=timeout
        )
        client.ping()
    except docker.errors.DockerException as e:
        host = environ.get("DOCKER_HOST", "the local Docker socket")
        raise DockerUnavailable(f"cannot reach the Docker engine at {host}: {_reason(e)}") from e
    return client


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def swarm_state(client: docker.DockerClient) -> tuple[str, bool]:
    """(LocalNodeState, whether this engine is a manager)."""
    info = client.info()
    swarm = info.get("Swarm") or {}
    return str(swarm.get("LocalNodeState", "inactive")), bool(swarm.get("ControlAvailable"))


def require_manager(client: docker.DockerClient) -> None:
    state, manager = swarm_state(client)
    if state != "active":
        raise NotASwarmManager("this Docker engine is not part of a swarm (run `docker swarm init`)")
    if not manager:
        raise NotASwarmManager(
            "this Docker engine is a swarm worker, not a manager: point DOCKER_HOST at a manager"
        )


def engine_host(environ: Mapping[str, str] = os.environ) -> str:
    """The host name the engine is reached at: DOCKER_HOST's host for tcp://, else 127.0.0.1."""
    url = environ.get("DOCKER_HOST", "")
    if url.startswith(("tcp://", "http://", "https://", "ssh://")):
        return urlsplit(url).hostname or "127.0.0.1"
    return "127.0.0.1"


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn Docker SDK and transport errors inside the block into DockerUnavailable(`what: reason`)."""
    try:
        yield
    except docker.errors.APIError as e:
        raise DockerUnavailable(f"{what}: {e.explanation or _reason(e)}") from e
    except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
        raise DockerUnavailable(f"{what}: {_reason(e)}") from e
