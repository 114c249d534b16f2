"""Kubernetes fixtures: the one-node test cluster of .ci/kubernetes, a namespace per test.

(The directory is tests/kube, not tests/kubernetes: the CLI's subprocesses have tests/ on
PYTHONPATH for the task fixtures, and a tests/kubernetes package would shadow the client.)

The cluster is the one `.ci/kubernetes/up.sh` starts (kubeconfig `$R/kubeconfig`, R defaulting
to /var/cache/swarmrun-k8s; SWARMRUN_TEST_KUBECONFIG overrides). Without it the tests skip
locally and fail when CI is set. The worker image (built by the swarm fixtures) and the Redis
image are loaded into the cluster's private dockerd: the node has no registry to pull from.
Each test gets its own namespace labelled `swarmrun.test=<session>` and, for Redis, a hostPath
PersistentVolume bound to its claim; all of it is deleted at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.conftest import require, run_cli, swarmrun_env
from tests.swarm.conftest import REDIS_IMAGE, SESSION, TEST_LABEL, docker_client, worker_image  # noqa: F401

R = Path(os.environ.get("R", "/var/cache/swarmrun-k8s"))
KUBECONFIG = Path(os.environ.get("SWARMRUN_TEST_KUBECONFIG", str(R / "kubeconfig")))
NODE_DOCKER = f"unix://{R / 'run' / 'docker.sock'}"
PV_ROOT = R / "pv"
KUBELET_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "kubernetes" / "kubelet.sh"


def _node_has(image: str) -> bool:
    env = {**os.environ, "DOCKER_HOST": NODE_DOCKER}
    return subprocess.run(["docker", "image", "inspect", image], env=env, capture_output=True).returncode == 0


def load_into_node(image: str) -> None:
    """`docker save` from this machine's engine into the node's private dockerd."""
    if _node_has(image):
        return
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "load"],
        stdin=save.stdout,
        env={**os.environ, "DOCKER_HOST": NODE_DOCKER},
        capture_output=True,
        text=True,
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait() == 0 and load.returncode == 0, load.stderr


def kubelet(action: str) -> str:
    """`.ci/kubernetes/kubelet.sh start|stop`: the test cluster's kubelet, by its pid file."""
    r = subprocess.run(
        ["bash", str(KUBELET_SCRIPT), action], env={**os.environ, "R": str(R)}, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def node_docker(*args: str) -> str:
    """A docker command against the node's private dockerd (it answers while the kubelet is down)."""
    r = subprocess.run(
        ["docker", *args], env={**os.environ, "DOCKER_HOST": NODE_DOCKER}, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


class Kube:
    """The test cluster through the official client (the same library the backend uses)."""

    def __init__(self) -> None:
        import kubernetes

        self.k = kubernetes
        self.api = kubernetes.config.new_client_from_config(str(KUBECONFIG))
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)

    def node_ready(self, name: str = "localhost") -> bool:
        node = self.core.read_node(name, _request_timeout=5)
        return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))

    def answers(self) -> bool:
        try:
            nodes = self.core.list_node(_request_timeout=5).items
        except Exception:
            return False
        return any(
            c.type == "Ready" and c.status == "True" for n in nodes for c in (n.status.conditions or [])
        )


@pytest.fixture(scope="session")
def kube(worker_image: str) -> Iterator[Kube]:  # noqa: F811
    require(
        KUBECONFIG.exists(), f"no Kubernetes test cluster ({KUBECONFIG} missing: bash .ci/kubernetes/up.sh)"
    )
    client = Kube()
    require(client.answers(), f"the Kubernetes test cluster of {KUBECONFIG} does not answer")
    for image in (worker_image, REDIS_IMAGE):
        load_into_node(image)
    yield client
    for ns in client.core.list_namespace(label_selector=f"{TEST_LABEL}={SESSION}").items:
        with contextlib.suppress(Exception):
            client.core.delete_namespace(ns.metadata.name)
    subprocess.run(
        ["docker", "rmi", "-f", worker_image],
        env={**os.environ, "DOCKER_HOST": NODE_DOCKER},
        capture_output=True,
    )


class KubeStack:
    """A stack in a namespace of its own, and the environment the CLI needs to drive it."""

    def __init__(self, kube: Kube, image: str, home: Path) -> None:
        self.kube = kube
        self.image = image
        self.namespace = f"srt-{SESSION}-{uuid.uuid4().hex[:4]}"
        self.name = "swarmrun"
        self.home = home
        self.env = swarmrun_env(
            None,
            home,
            KUBECONFIG=str(KUBECONFIG),
            SWARMRUN_NAMESPACE=self.namespace,
            SWARMRUN_HEARTBEAT_TTL="5",
        )
        kube.core.create_namespace({"metadata": {"name": self.namespace, "labels": {TEST_LABEL: SESSION}}})
        self.pv = f"{self.namespace}-redis"
        self.pv_dir = PV_ROOT / self.pv
        self.volumes: list[tuple[str, Path]] = []  # (PersistentVolume or "", host directory) to remove

    def add_volume(self) -> None:
        """A hostPath volume pre-bound to the stack's Redis claim (the test cluster has no provisioner)."""
        self.hostpath_volume(self.pv, f"{self.name}-redis-data", self.pv_dir)

    def hostpath_volume(self, pv: str, claim: str, directory: Path) -> None:
        """A hostPath PersistentVolume in `directory`, pre-bound to the claim `claim` of the namespace."""
        directory.mkdir(parents=True, exist_ok=True)
        self.kube.core.create_persistent_volume(
            {
                "metadata": {"name": pv, "labels": {TEST_LABEL: SESSION}},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                    "claimRef": {"namespace": self.namespace, "name": claim},
                },
            }
        )
        self.volumes.append((pv, directory))

    def add_claim(self, claim: str) -> Path:
        """A claim named `claim` (a `--mount type=volume,source=<claim>`) on a volume of its own;
        returns the host directory behind it."""
        directory = PV_ROOT / f"{self.namespace}-{claim}"
        self.hostpath_volume(f"{self.namespace}-{claim}", claim, directory)
        self.kube.core.create_namespaced_persistent_volume_claim(
            self.namespace,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "",
                    "volumeName": f"{self.namespace}-{claim}",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        return directory

    def options(self) -> list[str]:
        return [
            "--image",
            self.image,
            "--redis-image",
            REDIS_IMAGE,
            "--image-pull-policy",
            "Never",
            "--label",
            f"{TEST_LABEL}={SESSION}",
        ]

    def cli(self, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> Any:
        return run_cli(args, env=env or self.env, cwd=cwd, timeout=timeout)

    def pods(self, component: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        return list(self.kube.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def running_pods(self, component: str) -> list[Any]:
        return [
            p
            for p in self.pods(component)
            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]

    def redis_cli(self, *args: str) -> str:
        """redis-cli inside the Redis container, through the node's dockerd (not the kubelet)."""
        (container,) = node_docker(
            "ps",
            "-q",
            "--filter",
            f"label=io.kubernetes.pod.namespace={self.namespace}",
            "--filter",
            "label=io.kubernetes.container.name=redis",
        ).split()
        from swarmrun.backends.kubernetes.manifests import SECRET_PATH

        script = f'redis-cli --no-auth-warning -a "$(cat {SECRET_PATH})" "$@"'
        return node_docker("exec", container, "sh", "-c", script, "redis-cli", *args)

    @contextlib.contextmanager
    def queue(self) -> Iterator[SweepQueue]:
        """The stack's queue from this process, through a port-forward (as the CLI reaches it)."""
        from swarmrun.backends.kubernetes.backend import KubernetesBackend
        from swarmrun.backends.swarm.stack import StackConfig
        from swarmrun.execution.connection import connect

        # The client reads KUBECONFIG when it connects; set only while this queue is open, so it
        # does not leak into later tests' CLI subprocesses (`--backend auto` would find the cluster).
        before = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = str(KUBECONFIG)
        try:
            backend = KubernetesBackend(StackConfig(name=self.name), namespace=self.namespace, context=None)
            with backend.port_forward() as forward:
                conn = connect(backend.redis_url(forward.port), resilient=True)
                yield SweepQueue(conn, "swarmrun")
                with contextlib.suppress(redis.RedisError):
                    conn.close()
        finally:
            if before is None:
                os.environ.pop("KUBECONFIG", None)
            else:
                os.environ["KUBECONFIG"] = before

    def remove(self) -> None:
        """Delete the namespace, its pods first and without a grace period. A pod still there when
        the namespace goes makes Kubernetes wait out its grace period before it finalizes the
        namespace (about 70 s a test), so the Deployments and their ReplicaSets go first (or they
        make new pods), and pods made meanwhile are deleted again while the namespace goes."""
        core, apps = self.kube.core, self.kube.apps
        with contextlib.suppress(Exception):
            apps.delete_collection_namespaced_deployment(self.namespace)
        with contextlib.suppress(Exception):
            apps.delete_collection_namespaced_replica_set(self.namespace, grace_period_seconds=0)
        with contextlib.suppress(Exception):
            core.delete_collection_namespaced_pod(self.namespace, grace_period_seconds=0)
        with contextlib.suppress(Exception):
            core.delete_namespace(self.namespace, grace_period_seconds=0)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                core.read_namespace(self.namespace)
            except self.kube.k.client.exceptions.ApiException:
                break
            with contextlib.suppress(Exception):
                core.delete_collection_namespaced_pod(self.namespace, grace_period_seconds=0)
            time.sleep(1)
        for pv, directory in self.volumes:
            if pv:
                with contextlib.suppress(Exception):
                    core.delete_persistent_volume(pv)
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kstack(kube: Kube, worker_image: str, tmp_path: Path) -> Iterator[KubeStack]:  # noqa: F811
    s = KubeStack(kube, worker_image, tmp_path / "home")
    yield s
    s.remove()
