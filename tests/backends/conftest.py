"""The backends' fixtures, which the `target` fixture asks for by name (request.getfixturevalue)."""

from __future__ import annotations

from tests.kube.conftest import kstack, kube  # noqa: F401
from tests.swarm.conftest import docker_client, stack, worker_image  # noqa: F401
