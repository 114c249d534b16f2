"""Output files on the three-node cluster: workers on every node, files back on the manager through
Redis, a worker container killed mid-point, and a bind mount and a named volume in every worker."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from pathlib import Path

import pytest

from swarmrun.backends.swarm.stack import NAMESPACE_LABEL
from swarmrun.definition.sweepfile import load_sweep
from tests.cluster.conftest import ClusterStack
from tests.conftest import read_csv, wait_until, write_sweep

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


def expected_bin(i: int) -> bytes:
    return (hashlib.sha256(str(i).encode()).digest() * 100)[:3000]


def test_files_arrive_from_three_nodes_and_a_killed_container_leaves_no_partial_file(
    cstack: ClusterStack, tmp_path: Path
) -> None:
    up = cstack.cli("up", "-r", "3", "--max-per-node", "1", *cstack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    until = time.time() + 45
    path = write_sweep(
        tmp_path,
        f"""
name: cluster-files
task: {{call: "fixtures.tasks:write_until"}}
outputs: ["*.bin", "*.txt"]
chunk: 1
params:
  hang: [4]
  until: [{until}]
  nap: [2]
  i: {{range: [0, 30]}}
""",
    )
    sid = load_sweep(path).id
    out = tmp_path / "res" / "files.csv"
    run = cstack.spawn("run", str(path), "-o", str(out), cwd=tmp_path)
    try:
        queue = wait_until(lambda: _queue(cstack), 120, 1, message="stack Redis")
        raw = wait_until(
            lambda: queue.connection.hget(f"swarmrun:sweep:{sid}:runs", "4"),
            120,
            0.3,
            message="point 4 running",
        )
        victim_node = json.loads(raw.decode().splitlines()[0])["n"]
        killed = []
        for node, container in cstack.worker_containers():
            if node.hostname == victim_node:
                killed.append(container.attrs["Config"]["Hostname"])
                container.kill()
        assert killed
        stdout, stderr = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    rows = {int(row["i"]): row for row in read_csv(out)}
    assert len(rows) == 30 and {row["status"] for row in rows.values()} == {"ok"}
    nodes = set()
    for i, row in rows.items():
        point = tmp_path / "res" / "files" / "points" / str(i)
        assert (point / "data.bin").read_bytes() == expected_bin(i)
        who = (point / "who.txt").read_text()
        assert row["who"] == who  # the files of the execution that won
        nodes.add(row["worker"].split(".")[0].rsplit("-", 1)[0])
    # 29 points of 2 s keep the workers busy for about 20 s, so the victim node's replacement
    # container wins points too (instant points could all go to the other two nodes)
    assert nodes == {"manager", "worker1", "worker2"}
    assert (tmp_path / "res" / "files" / "points" / "4" / "who.txt").read_text().split(":")[0] not in killed
    assert not [p for p in (tmp_path / "res").rglob("*") if ".part" in p.name]
    show = cstack.cli("show", sid, "4", cwd=tmp_path)
    assert "executions (2):" in show.stdout and " running " in show.stdout, show.stdout
    queue = _queue(cstack)
    assert not list(queue.connection.scan_iter(match=f"swarmrun:sweep:{sid}:out:*"))


def _queue(cstack: ClusterStack):  # type: ignore[no-untyped-def]
    try:
        return cstack.queue()
    except Exception:
        return None


def test_a_bind_mount_and_a_named_volume_are_visible_in_every_worker(
    cstack: ClusterStack, tmp_path: Path
) -> None:
    shared = f"/srv/{cstack.name}"
    for node in cstack.cluster.nodes:  # a bind source must exist on every node
        container = cstack.cluster.host.containers.get(node.container)
        assert (
            container.exec_run(["sh", "-c", f"mkdir -p {shared} && echo {node.hostname} > {shared}/node"])[0]
            == 0
        )
    volume = f"{cstack.name}-vol"
    mounts = [
        "--mount",
        f"type=bind,source={shared},target=/shared,readonly",
        "--mount",
        f"type=volume,source={volume},target=/vol,volume-label={NAMESPACE_LABEL}={cstack.name}",
    ]
    up = cstack.cli("up", "-r", "3", "--max-per-node", "1", *cstack.options(), *mounts, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    seen = {}
    for node, container in cstack.worker_containers():
        code, output = container.exec_run(["sh", "-c", "cat /shared/node && touch /vol/w && ls /vol"])
        assert code == 0, output
        seen[node.hostname] = output.decode().split()
        assert container.exec_run(["touch", "/shared/x"])[0] != 0  # readonly
    assert {k: v[0] for k, v in seen.items()} == {
        "manager": "manager",
        "worker1": "worker1",
        "worker2": "worker2",
    }
    assert all("w" in v for v in seen.values())
    for node in cstack.cluster.nodes:
        with closing(node.client()) as c:
            assert c.volumes.get(volume).attrs["Labels"][NAMESPACE_LABEL] == cstack.name
