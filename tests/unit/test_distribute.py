"""Image references, registry and engine addresses, and node engines from `docker node inspect` JSON
(captured from the three-node test cluster, trimmed to the fields read); no Docker needed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarmrun.backends.swarm.distribute import (
    Delivery,
    NodeEngine,
    check_deliveries,
    check_engine_url,
    check_registry,
    node_address,
    nodes_of_swarm,
    normalize,
    registry_reference,
    split_reference,
)
from swarmrun.errors import DockerUnavailable, ImageBuildError

# `docker node inspect` of the test cluster's manager and a worker (engine 20.10.24), trimmed.
MANAGER: dict[str, Any] = {
    "ID": "xujbigmnrc5rn39fb1tpqnxfy",
    "Spec": {"Labels": {}, "Role": "manager", "Availability": "active"},
    "Description": {"Hostname": "manager", "Platform": {"Architecture": "x86_64", "OS": "linux"}},
    "Status": {"State": "ready", "Addr": "192.168.16.2"},
    "ManagerStatus": {"Leader": True, "Reachability": "reachable", "Addr": "192.168.16.2:2377"},
}
WORKER: dict[str, Any] = {
    "ID": "mr81w0mgpn4shm41y7xn1otp9",
    "Spec": {"Labels": {}, "Role": "worker", "Availability": "active"},
    "Description": {"Hostname": "worker1", "Platform": {"Architecture": "x86_64", "OS": "linux"}},
    "Status": {"State": "ready", "Addr": "192.168.16.3"},
}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("swarmrun-worker", (None, "swarmrun-worker", "latest")),
        ("swarmrun-worker:2024-06", (None, "swarmrun-worker", "2024-06")),
        ("team/worker:1", (None, "team/worker", "1")),
        ("10.0.0.5:5000/team/worker:1", ("10.0.0.5:5000", "team/worker", "1")),
        ("10.0.0.5:5000/worker", ("10.0.0.5:5000", "worker", "latest")),
        ("localhost/worker:x", ("localhost", "worker", "x")),
        ("registry.example/worker", ("registry.example", "worker", "latest")),
    ],
)
def test_split_reference(reference: str, expected: tuple[str | None, str, str]) -> None:
    assert split_reference(reference) == expected


def test_references_by_digest_or_empty_are_refused() -> None:
    with pytest.raises(ImageBuildError, match="by digest"):
        split_reference("worker@sha256:" + "a" * 64)
    with pytest.raises(ImageBuildError, match="not an image reference"):
        split_reference("worker:")


def test_registry_reference_replaces_the_registry_and_keeps_path_and_tag() -> None:
    assert normalize("swarmrun-worker") == "swarmrun-worker:latest"
    pushed = registry_reference("swarmrun-worker:latest", "10.0.0.5:5000")
    assert pushed == "10.0.0.5:5000/swarmrun-worker:latest"
    assert registry_reference("old:5000/team/w:2", "new:5000/sweeps/") == "new:5000/sweeps/team/w:2"


@pytest.mark.parametrize("bad", ["http://10.0.0.5:5000", "10.0.0.5:port", "", "host:5000/Upper"])
def test_bad_registry_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        check_registry(bad)


@pytest.mark.parametrize(
    "good", ["tcp://10.0.0.5:2375", "ssh://me@node3", "unix:///var/run/docker.sock", "tcp://[fd00::5]:2375"]
)
def test_engine_urls_docker_accepts(good: str) -> None:
    assert check_engine_url(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("10.0.0.5:2375", "starts with"),
        ("ftp://x", "starts with"),
        ("tcp://", "no host"),
        ("tcp://h:port", "malformed port"),
        ("unix://", "socket path"),
    ],
)
def test_bad_engine_urls(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_engine_url(bad)


def test_node_address_falls_back_to_the_manager_address() -> None:
    assert node_address(WORKER) == "192.168.16.3"
    unset = copy.deepcopy(MANAGER)
    unset["Status"]["Addr"] = "0.0.0.0"  # what some engines report for a manager
    assert node_address(unset) == "192.168.16.2"
    assert node_address({"Status": {"Addr": ""}}) is None


def test_nodes_of_swarm_reaches_the_own_engine_as_docker_host_says() -> None:
    nodes = nodes_of_swarm(
        [WORKER, MANAGER], self_id=MANAGER["ID"], self_url="ssh://me@manager", engine_port=2376
    )
    assert nodes == [
        NodeEngine("manager", "ssh://me@manager", "manager"),
        NodeEngine("worker1", "tcp://192.168.16.3:2376", "worker"),
    ]
    assert nodes_of_swarm([WORKER, MANAGER], self_id="other", self_url="x", role="manager") == [
        NodeEngine("manager", "tcp://192.168.16.2:2375", "manager")
    ]


def test_nodes_that_are_down_are_left_out() -> None:
    down = copy.deepcopy(WORKER)
    down["Status"]["State"] = "down"
    assert [n.name for n in nodes_of_swarm([down, MANAGER], self_id="", self_url="")] == ["manager"]


def test_failed_deliveries_raise_one_error_naming_each() -> None:
    node = NodeEngine("worker1", "tcp://10.0.0.3:2375", "worker")
    check_deliveries([Delivery(node, "w:1", "loaded", 1.0), Delivery(node, "r:1", "present")])
    with pytest.raises(ImageBuildError, match="w:1 on tcp://10.0.0.3:2375: no space left"):
        check_deliveries([Delivery(node, "w:1", "failed", detail="no space left")])
    with pytest.raises(DockerUnavailable, match="could not reach every node"):
        check_deliveries([Delivery(node, "w:1", "failed", detail="refused", unreachable=True)])
    assert (
        Delivery(NodeEngine("tcp://h:2375", "tcp://h:2375"), "w:1", "present").describe()
        == "tcp://h:2375: w:1 already there"
    )
