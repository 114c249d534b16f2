"""Sweeps on a three-node swarm driven through DOCKER_HOST: spreading, status per node, placement and
resources, images onto every node by `image distribute` and by `image push` to a registry service."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from contextlib import closing, suppress
from pathlib import Path

import docker
import pytest

from tests.cluster.conftest import REDIS_IMAGE, REGISTRY_IMAGE, SESSION, TEST_LABEL, ClusterStack
from tests.cluster.harness import CLUSTER_LABEL, Cluster, remove
from tests.conftest import ROOT, read_csv, wait_until, write_sweep

pytestmark = pytest.mark.cluster

NAP = """
name: cluster-nap
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  test: [{test}]
  i: {{range: [0, {points}]}}
"""


def node_of(worker: str) -> str:
    """`worker1-3.8-ab12` (node host name, task slot, pid, suffix) -> `worker1`."""
    return worker.split(".")[0].rsplit("-", 1)[0]


def per_node(text: str) -> dict[str, int]:
    """`... running (manager: 2, worker1: 2)` -> {"manager": 2, "worker1": 2}."""
    match = re.search(r"running \(([^)]*)\)", text)
    assert match, text
    return {k: int(v) for k, v in (part.split(": ") for part in match[1].split(", "))}


def local_engine_url() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def test_sweep_spreads_over_every_node_and_status_shows_them(cstack: ClusterStack, tmp_path: Path) -> None:
    up = cstack.cli("up", "-r", "3", *cstack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert per_node(up.stdout) == {"manager": 1, "worker1": 1, "worker2": 1}
    assert f"Redis at redis://:***@{cstack.cluster.manager.ip}:{cstack.port}/0" in up.stdout
    scaled = cstack.cli("scale", "6", cwd=tmp_path)
    assert scaled.returncode == 0, scaled.stderr
    assert "workers 6/6 running" in scaled.stdout
    assert per_node(scaled.stdout) == {"manager": 2, "worker1": 2, "worker2": 2}

    path = write_sweep(tmp_path, NAP.format(seconds=0.05, test="spread", points=300))
    out = tmp_path / "out.csv"
    r = cstack.cli("run", str(path), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_csv(out)
    assert sorted(int(row["i"]) for row in rows) == list(range(300))
    assert {row["status"] for row in rows} == {"ok"}
    assert {node_of(row["worker"]) for row in rows} == {"manager", "worker1", "worker2"}

    status = cstack.cli("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "300 done (300 ok" in status.stdout
    workers_line = next(line for line in status.stdout.splitlines() if line.strip().startswith("workers"))
    assert per_node(workers_line) == {"manager": 2, "worker1": 2, "worker2": 2}, status.stdout


def _label_nodes(cluster: Cluster, hostnames: set[str], key: str, value: str | None) -> None:
    """Add (or with None, remove) a node label, as `docker node update --label-add` does."""
    with closing(cluster.manager_client()) as m:
        for node in m.nodes.list():
            if node.attrs["Description"]["Hostname"] not in hostnames:
                continue
            spec = dict(node.attrs["Spec"])
            labels = dict(spec.get("Labels") or {})
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
            spec["Labels"] = labels
            node.update(spec)


def _cgroup_limits(container: docker.models.containers.Container) -> tuple[int, int, int]:
    """(memory limit bytes, CFS quota, CFS period) as the kernel applies them to the container."""
    result = container.exec_run(
        [
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us",
        ]
    )
    assert result.exit_code == 0, result.output
    memory, quota, period = (int(v) for v in result.output.split())
    return memory, quota, period


def test_placement_and_resources_take_effect_on_the_nodes(cstack: ClusterStack, tmp_path: Path) -> None:
    cluster = cstack.cluster
    _label_nodes(cluster, {"worker1", "worker2"}, "swarmrun.pool", "sweep")
    try:
        path = write_sweep(tmp_path, NAP.format(seconds=0.05, test="placement", points=120))
        out = tmp_path / "out.csv"
        placement = ["--constraint", "node.labels.swarmrun.pool==sweep", "--max-per-node", "2"]
        resources = ["--cpus", "0.5", "--memory", "256m"]
        r = cstack.cli(
            "run",
            str(path),
            "-w",
            "4",
            "-o",
            str(out),
            *placement,
            *resources,
            *cstack.options(),
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        rows = read_csv(out)
        assert len(rows) == 120 and {row["status"] for row in rows} == {"ok"}
        assert {node_of(row["worker"]) for row in rows} <= {"worker1", "worker2"}

        containers = cstack.worker_containers()
        placed: dict[str, int] = {}
        for node, container in containers:
            placed[node.hostname] = placed.get(node.hostname, 0) + 1
            host_config = container.attrs["HostConfig"]
            assert (host_config["NanoCpus"], host_config["Memory"]) == (500_000_000, 256 * 1024**2)
            memory, quota, period = _cgroup_limits(container)
            assert memory == 256 * 1024**2 and quota / period == 0.5
        assert placed == {"worker1": 2, "worker2": 2}

        # a fifth replica has nowhere to go: two matching nodes, at most two workers each
        scaled = cstack.cli("scale", "5", "--no-wait", cwd=tmp_path)
        assert scaled.returncode == 0, scaled.stderr

        def refused() -> str | None:
            for task in cstack.tasks():
                status = task["Status"]
                if task["DesiredState"] == "running" and status["State"] == "pending":
                    return str(status.get("Err", ""))
            return None

        reason = wait_until(refused, 60, message="a pending fifth task")
        assert "max replicas per node" in reason, reason
        time.sleep(2)
        status = cstack.cli("status", cwd=tmp_path)
        assert "workers    4/5 running (worker1: 2, worker2: 2)" in status.stdout, status.stdout
    finally:
        _label_nodes(cluster, {"worker1", "worker2"}, "swarmrun.pool", None)


def _probe_image(cluster: Cluster) -> str:
    """A tiny image of its own (one small file) on this machine's engine, new to every node."""
    tag = f"swarmrun-probe:{SESSION}"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (
            ("Dockerfile", f"FROM scratch\nCOPY probe.txt /\nLABEL {TEST_LABEL}={SESSION}\n"),
            ("probe.txt", f"distribute {SESSION}\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data.encode())
            tar.addfile(info, io.BytesIO(data.encode()))
    context.seek(0)
    cluster.host.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag


def _ids(cluster: Cluster, image: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for node in cluster.nodes:
        with closing(node.client()) as c:
            try:
                found[node.hostname] = c.images.get(image).id
            except docker.errors.ImageNotFound:
                found[node.hostname] = None
    return found


def test_image_distribute_loads_into_each_node_once(cstack: ClusterStack, tmp_path: Path) -> None:
    cluster = cstack.cluster
    image = _probe_image(cluster)
    wanted = cluster.host.images.get(image).id
    source = ["--source", local_engine_url()]

    workers = cstack.cli("image", "distribute", image, *source, "--role", "worker", cwd=tmp_path)
    assert workers.returncode == 0, workers.stderr
    assert workers.stdout.strip() == f"{image}: loaded on 2, already on 0 of 2 nodes"
    assert f"worker1 (tcp://{cluster.node('worker1').ip}:2375): {image} loaded in" in workers.stderr
    assert _ids(cluster, image) == {"manager": None, "worker1": wanted, "worker2": wanted}

    everywhere = cstack.cli("image", "distribute", image, *source, cwd=tmp_path)
    assert everywhere.returncode == 0, everywhere.stderr
    assert everywhere.stdout.strip() == f"{image}: loaded on 1, already on 2 of 3 nodes"
    assert _ids(cluster, image) == {"manager": wanted, "worker1": wanted, "worker2": wanted}

    # from the manager DOCKER_HOST names (the default source), which has it now too
    from_manager = cstack.cli("image", "distribute", image, cwd=tmp_path)
    assert from_manager.returncode == 0, from_manager.stderr
    assert from_manager.stdout.strip() == f"{image}: loaded on 0, already on 3 of 3 nodes"

    explicit = cstack.cli(
        "image", "distribute", image, *source, "--node", cluster.node("worker2").url, cwd=tmp_path
    )
    assert explicit.returncode == 0, explicit.stderr
    assert explicit.stdout.strip() == f"{image}: loaded on 0, already on 1 of 1 nodes"

    # bad input: one line and a documented exit code each
    closed = f"tcp://{cluster.manager.ip}:1"
    unreachable = cstack.cli("image", "distribute", image, *source, "--node", closed, cwd=tmp_path)
    assert unreachable.returncode == 5
    assert unreachable.stderr.splitlines()[-1] == (
        f"Error: could not reach every node: {image} on {closed}: "
        f"cannot reach the Docker engine at {closed}: connection refused"
    )
    missing = cstack.cli("image", "distribute", f"swarmrun-absent:{SESSION}", cwd=tmp_path)
    assert missing.returncode == 6 and missing.stderr.count("\n") == 1, missing.stderr
    assert f"image swarmrun-absent:{SESSION} is not on this Docker engine" in missing.stderr
    for args in (["--node", "ftp://somewhere"], ["--node", cluster.node("worker1").url, "--role", "worker"]):
        bad = cstack.cli("image", "distribute", image, *args, cwd=tmp_path)
        assert bad.returncode == 2 and "Invalid value for" in bad.stderr, bad.stderr


HISTORY_LIMIT = 1


def test_up_warns_about_nodes_that_lack_the_worker_image(cstack: ClusterStack, tmp_path: Path) -> None:
    """Also when the swarm keeps a short task history (`docker swarm update --task-history-limit`):
    a node's rejection is soon pruned from a replica slot that retried elsewhere, and the warning
    once lost nodes that way (intermittently with the default of 5, after a dozen retries)."""
    only_here = f"swarmrun-worker:manager-only-{SESSION}"
    cstack.cluster.wait_ready()  # the swarm places a first task on each node only when all are ready
    with closing(cstack.cluster.manager_client()) as m:
        m.images.get(cstack.image).tag("swarmrun-worker", f"manager-only-{SESSION}")
        m.swarm.reload()
        limit = m.swarm.attrs["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"]
        m.swarm.update(task_history_retention_limit=HISTORY_LIMIT)
    try:
        up = cstack.cli("up", "-r", "3", *cstack.options(only_here), cwd=tmp_path)
    finally:
        with closing(cstack.cluster.manager_client()) as m:
            m.swarm.reload()
            m.swarm.update(task_history_retention_limit=limit)
    assert up.returncode == 0, up.stderr
    # the swarm places the rejected tasks on the one node that has the image
    assert per_node(up.stdout) == {"manager": 3}
    assert (
        f"Warning: worker1, worker2 lack image {only_here}; their workers run elsewhere. "
        f"Copy it there: swarmrun image distribute {only_here}"
    ) in up.stderr


REGISTRY_SCRIPT = (
    'printf "version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/docker-registry\\n'
    'http:\\n  addr: :5000\\n" > /tmp/registry.yml && exec docker-registry serve /tmp/registry.yml'
)


def test_image_push_to_a_registry_service_that_the_nodes_pull_from(
    cstack: ClusterStack, tmp_path: Path
) -> None:
    cluster = cstack.cluster
    cluster.load_images([REGISTRY_IMAGE], role="manager")
    registry = f"{cluster.manager.ip}:5000"
    service = f"registry{SESSION}"
    env = {**os.environ, **cluster.env()}
    # as docs/cluster.md runs it: a swarm service on the manager, its port published in host mode
    create = subprocess.run(
        [
            "docker",
            "service",
            "create",
            "--detach",
            "--name",
            service,
            "--label",
            f"{TEST_LABEL}={SESSION}",
            "--constraint",
            "node.role==manager",
            "--publish",
            "mode=host,target=5000,published=5000",
            "--mount",
            "type=volume,source=registry-data,target=/var/lib/docker-registry",
            REGISTRY_IMAGE,
            "sh",
            "-c",
            REGISTRY_SCRIPT,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert create.returncode == 0, create.stderr
    try:

        def answers() -> bool:
            with suppress(OSError), urllib.request.urlopen(f"http://{registry}/v2/", timeout=2) as response:
                return bool(response.status == 200)
            return False

        wait_until(answers, 60, interval=0.5, message=f"the registry at {registry}")
        pushed = cstack.cli(
            "image", "push", cstack.image, REDIS_IMAGE, "--registry", f"{registry}/s{SESSION}", cwd=tmp_path
        )
        assert pushed.returncode == 0, pushed.stderr
        worker_ref, redis_ref = pushed.stdout.split()
        assert worker_ref == f"{registry}/s{SESSION}/{cstack.image}"
        # only the registry has the pushed names now: `up` resolves them there and every node pulls
        with closing(cluster.manager_client()) as m:
            for ref in (worker_ref, redis_ref):
                m.images.remove(ref)
        up = cstack.cli(
            "up",
            "-r",
            "3",
            *cstack.options(worker_ref)[:2],
            "--redis-image",
            redis_ref,
            *cstack.options()[4:],
            cwd=tmp_path,
        )
        assert up.returncode == 0, up.stderr
        assert per_node(up.stdout) == {"manager": 1, "worker1": 1, "worker2": 1}
        wanted = cluster.host.images.get(cstack.image).id
        assert _ids(cluster, worker_ref) == {"manager": wanted, "worker1": wanted, "worker2": wanted}

        path = write_sweep(tmp_path, NAP.format(seconds=0.02, test="registry", points=60))
        out = tmp_path / "out.csv"
        r = cstack.cli("run", str(path), "-o", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert sorted(int(row["i"]) for row in read_csv(out)) == list(range(60))

        # bad input: one line each
        nowhere = cstack.cli(
            "image", "push", cstack.image, "--registry", f"{cluster.manager.ip}:5001", cwd=tmp_path
        )
        assert nowhere.returncode == 10 and nowhere.stderr.splitlines()[-1].startswith("Error: pushing ")
        assert "connection refused; is a registry listening at" in nowhere.stderr
        with closing(cluster.manager_client()) as m:
            assert not any(":5001/" in tag for image in m.images.list() for tag in image.tags)
        absent = cstack.cli(
            "up", "--image", f"{registry}/s{SESSION}/absent:1", *cstack.options()[2:], cwd=tmp_path
        )
        assert absent.returncode == 6 and absent.stderr.count("\n") == 1, absent.stderr
        assert "nor in a registry it can reach" in absent.stderr
        scheme = cstack.cli("image", "push", "--registry", f"http://{registry}", cwd=tmp_path)
        assert scheme.returncode == 2 and "without a scheme" in scheme.stderr
    finally:
        subprocess.run(["docker", "service", "rm", service], env=env, capture_output=True, timeout=60)


def test_harness_command_line_starts_and_removes_a_cluster(host_engine: docker.DockerClient) -> None:
    name = f"srt{SESSION}h"
    harness = [sys.executable, "-m", "tests.cluster.harness"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        up = subprocess.run(
            [*harness, "up", "--name", name, "--workers", "1"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=180,
        )
        assert up.returncode == 0, up.stderr
        url = up.stdout.strip().removeprefix("export DOCKER_HOST=")
        assert url.startswith("tcp://")
        again = subprocess.run(
            [*harness, "env", "--name", name], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )
        assert again.stdout.strip() == up.stdout.strip()
        with closing(docker.DockerClient(base_url=url)) as manager:
            assert sorted(n.attrs["Status"]["State"] for n in manager.nodes.list()) == ["ready", "ready"]
        down = subprocess.run(
            [*harness, "down", "--name", name], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
        )
        assert down.returncode == 0, down.stderr
        label = {"label": f"{CLUSTER_LABEL}={name}"}
        host = host_engine
        assert host.containers.list(all=True, filters=label) == []
        assert host.networks.list(filters=label) == [] and host.volumes.list(filters=label) == []
    finally:
        remove(host_engine, name)
