"""A throwaway multi-node swarm on this machine, for the cluster tests and benchmarks.

Each node is a docker-in-docker container (image `swarmrun-node:bookworm`: Debian's docker.io) on a
private bridge network, started as the shared ENVIRONMENT.md shows: every capability except
SYS_RESOURCE instead of --privileged, the host's cgroup tree, an anonymous volume for the node's
/var/lib/docker, its API on tcp://<node-ip>:2375. One node is the manager; the others join it as
workers. Whoever drives the cluster talks to the manager as a user talks to a remote manager:
`DOCKER_HOST=tcp://<manager-ip>:2375`. Node engines trust plain-HTTP registries on the nodes'
network (`--insecure-registry <subnet>`), so a registry run as a swarm service works.

Everything carries the label `swarmrun.cluster=<name>` (plus any labels given) and `down` removes
exactly that: the node containers with their volumes, the network, and the cgroups the nodes'
engines left on the host.

    python -m tests.cluster.harness up [--name NAME] [--workers N] [--image IMAGE]...
    python -m tests.cluster.harness env [--name NAME]      # prints export DOCKER_HOST=...
    python -m tests.cluster.harness down [--name NAME]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from swarmrun.backends.swarm import distribute, engine

NODE_IMAGE = os.environ.get("SWARMRUN_TEST_NODE_IMAGE", "swarmrun-node:bookworm")
CLUSTER_LABEL = "swarmrun.cluster"
ROLE_LABEL = "swarmrun.cluster.role"
ENGINE_PORT = 2375
CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_NAME = "swarmrun-dev"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (docker.errors.DockerException, OSError) as e:
            last_error = e
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


@dataclass
class Node:
    """One node container: its host name inside the swarm, its container name and address."""

    hostname: str
    container: str
    role: str
    ip: str = ""

    @property
    def url(self) -> str:
        return f"tcp://{self.ip}:{ENGINE_PORT}"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)


@dataclass
class Cluster:
    """A manager and `workers` worker nodes as containers of the engine `host`."""

    host: docker.DockerClient
    name: str = DEFAULT_NAME
    workers: int = 2
    labels: Mapping[str, str] = field(default_factory=dict)
    node_image: str = NODE_IMAGE
    nodes: list[Node] = field(default_factory=list)
    subnet: str = ""

    # --- names ---------------------------------------------------------------------------------
    @property
    def network(self) -> str:
        return f"{self.name}-nodes"

    def _labels(self, role: str | None = None) -> dict[str, str]:
        out = {CLUSTER_LABEL: self.name, **self.labels}
        if role:
            out[ROLE_LABEL] = role
        return out

    @property
    def manager(self) -> Node:
        return next(n for n in self.nodes if n.role == "manager")

    @property
    def worker_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    def node(self, hostname: str) -> Node:
        return next(n for n in self.nodes if n.hostname == hostname)

    def env(self) -> dict[str, str]:
        """What a CLI needs to drive this swarm: DOCKER_HOST of the manager."""
        return {"DOCKER_HOST": self.manager.url}

    def manager_client(self, timeout: int = 120) -> docker.DockerClient:
        return self.manager.client(timeout)

    # --- up ------------------------------------------------------------------------------------
    def up(self, timeout: float = 120, *, swarm: bool = True) -> Cluster:
        """Start the node containers, make the swarm, wait until every node is ready.

        `swarm=False` leaves the engines standalone (no `swarm init`), as a machine that never
        joined a swarm."""
        started = time.monotonic()
        network = self.host.networks.create(self.network, driver="bridge", labels=self._labels())
        network.reload()
        self.subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        self.nodes = [Node("manager", f"{self.name}-manager", "manager")]
        self.nodes += [
            Node(f"worker{i}", f"{self.name}-worker{i}", "worker") for i in range(1, self.workers + 1)
        ]
        for node in self.nodes:
            self._run(node)
        for node in self.nodes:
            self._wait_engine(node, timeout)
        if not swarm:
            return self
        manager = self.manager
        with closing(manager.client()) as m:
            m.swarm.init(advertise_addr=manager.ip, listen_addr=f"{manager.ip}:2377")
            token = m.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.worker_nodes:
            with closing(node.client()) as w:
                w.swarm.join(
                    remote_addrs=[f"{manager.ip}:2377"],
                    join_token=token,
                    advertise_addr=node.ip,
                    listen_addr=f"{node.ip}:2377",
                )
        self.wait_ready(timeout)
        self.log(
            f"cluster {self.name}: {len(self.nodes)} nodes ready in {time.monotonic() - started:.1f}s, "
            f"manager {manager.url}"
        )
        return self

    def _run(self, node: Node) -> None:
        command = [
            "dockerd",
            "--storage-driver",
            "overlay2",
            "--cgroup-parent",
            f"/{node.container}",
            "--insecure-registry",
            self.subnet,
            "--tls=false",  # --tls=false: no 15 s warning pause
            "-H",
            "unix:///var/run/docker.sock",
            "-H",
            f"tcp://0.0.0.0:{ENGINE_PORT}",
        ]
        api = self.host.api
        host_config = api.create_host_config(
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": ""},
            binds={str(CGROUP_ROOT): {"bind": str(CGROUP_ROOT), "mode": "rw"}},
            mounts=[Mount("/var/lib/docker", None, type="volume", labels=self._labels())],
            network_mode=self.network,
        )
        # `--security-opt systempaths=unconfined` of the docker CLI: nothing of /proc masked or read-only
        # (the node's engine writes /proc/sys). The SDK has no parameter for it; the API has the fields.
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        created = api.create_container(
            self.node_image,
            command,
            name=node.container,
            hostname=node.hostname,
            labels=self._labels(node.role),
            host_config=host_config,
        )
        api.start(created["Id"])
        self._refresh_ip(node)

    def _refresh_ip(self, node: Node) -> None:
        container = self.host.containers.get(node.container)
        node.ip = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]

    def _wait_engine(self, node: Node, timeout: float) -> None:
        def answers() -> bool:
            with closing(node.client(timeout=5)) as c:
                return bool(c.ping())

        wait_for(answers, timeout, f"the engine of {node.hostname} at {node.url}")

    def ready_nodes(self) -> dict[str, str]:
        """Host name -> node state, as the manager sees them."""
        with closing(self.manager_client(timeout=10)) as m:
            return {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"] for n in m.nodes.list()}

    def wait_ready(self, timeout: float = 120) -> None:
        want = {n.hostname for n in self.nodes}
        wait_for(
            lambda: {h for h, s in self.ready_nodes().items() if s == "ready"} >= want,
            timeout,
            f"nodes {sorted(want)} to be ready",
        )

    # --- images --------------------------------------------------------------------------------
    def load_images(
        self, images: Sequence[str], *, role: str | None = None, source: docker.DockerClient | None = None
    ) -> list[distribute.Delivery]:
        """Copy images from the host engine (or `source`) into the nodes' engines (`role` only)."""
        targets = [
            distribute.NodeEngine(n.hostname, n.url, n.role)
            for n in self.nodes
            if role is None or n.role == role
        ]
        deliveries = distribute.distribute(
            source or self.host, images, targets, jobs=len(targets), log=self.log
        )
        distribute.check_deliveries(deliveries)
        return deliveries

    # --- disruption ----------------------------------------------------------------------------
    def kill_node(self, hostname: str) -> None:
        """Power loss: SIGKILL the node container (its engine and every container on it die)."""
        self.host.containers.get(self.node(hostname).container).kill()

    def start_node(self, hostname: str, timeout: float = 120) -> None:
        """Start a stopped node container again; it rejoins the swarm with its old identity."""
        node = self.node(hostname)
        self.host.containers.get(node.container).start()
        self._refresh_ip(node)
        self._wait_engine(node, timeout)
        self.wait_ready(timeout)

    def node_containers(self, service: str) -> list[tuple[Node, Any]]:
        """(node, container) of every running container of a swarm service, on every live node."""
        found = []
        for node in self.nodes:
            try:
                with closing(node.client(timeout=10)) as c:
                    label = f"com.docker.swarm.service.name={service}"
                    found += [
                        (node, container)
                        for container in c.containers.list(filters={"label": label}, ignore_removed=True)
                    ]
            except docker.errors.DockerException:
                continue  # a node that is down has no containers to offer
        return found

    # --- down ----------------------------------------------------------------------------------
    def down(self) -> None:
        """Remove what this cluster made: node containers and their volumes, network, cgroups."""
        remove(self.host, self.name)

    @classmethod
    def attach(cls, host: docker.DockerClient, name: str) -> Cluster:
        """The running cluster `name` (made by `up`, e.g. from another process)."""
        containers = host.containers.list(filters={"label": f"{CLUSTER_LABEL}={name}"})
        if not containers:
            raise LookupError(f"no cluster named {name!r} is running")
        cluster = cls(host, name, workers=len(containers) - 1)
        for c in sorted(containers, key=lambda c: c.name):
            role = c.labels.get(ROLE_LABEL, "worker")
            node = Node(c.attrs["Config"]["Hostname"], c.name, role)
            cluster.nodes.append(node)
            cluster._refresh_ip(node)
        return cluster

    @staticmethod
    def log(line: str) -> None:
        print(f"[cluster] {line}", file=sys.stderr, flush=True)


def remove(host: docker.DockerClient, name: str) -> None:
    """Remove every container, volume and network labelled `swarmrun.cluster=name`, then its cgroups."""
    label = {"label": f"{CLUSTER_LABEL}={name}"}
    for container in host.containers.list(all=True, filters=label, ignore_removed=True):
        with suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for kind in (host.volumes, host.networks):
        for item in kind.list(filters=label):
            for _ in range(20):
                try:
                    item.remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    time.sleep(0.5)
    remove_cgroups(f"{name}-")


def remove_cgroups(prefix: str, root: Path = CGROUP_ROOT) -> int:
    """Remove the (empty) cgroups named `prefix*` that the nodes' engines made on the host (their
    --cgroup-parent), deepest first; a cgroup still holding processes stays. Returns how many went."""
    removed = 0
    tops = [p for p in [*root.glob(f"{prefix}*"), *root.glob(f"*/{prefix}*")] if p.is_dir()]
    for top in tops:
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            try:
                path.rmdir()
                removed += 1
            except OSError:
                pass
    return removed


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.cluster.harness",
        description="A throwaway multi-node swarm of docker-in-docker nodes.",
    )
    parser.add_argument("action", choices=["up", "down", "env"])
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"cluster name (default {DEFAULT_NAME})")
    parser.add_argument("--workers", type=int, default=2, help="worker nodes besides the manager (up)")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="image of this engine to load into every node (up; repeatable)",
    )
    args = parser.parse_args(argv)
    host = engine.connect()
    if args.action == "down":
        remove(host, args.name)
        print(f"cluster {args.name} removed", file=sys.stderr)
        return 0
    if args.action == "up":
        if host.containers.list(all=True, filters={"label": f"{CLUSTER_LABEL}={args.name}"}):
            print(f"cluster {args.name} exists already (down it first)", file=sys.stderr)
            return 1
        cluster = Cluster(host, args.name, workers=args.workers)
        try:
            cluster.up()
            if args.image:
                cluster.load_images(args.image)
        except BaseException:
            cluster.down()
            raise
    else:
        cluster = Cluster.attach(host, args.name)
    print(f"export DOCKER_HOST={cluster.manager.url}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
