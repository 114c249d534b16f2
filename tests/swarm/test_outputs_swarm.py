"""Output files, logs and mounts on the real one-node swarm: workers in containers, files back
through the stack's Redis, a bind mount and a named volume in every worker."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import redis

from swarmrun.backends.swarm.stack import NAMESPACE_LABEL
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.queue import SweepQueue
from tests.conftest import read_csv, write_sweep
from tests.swarm.conftest import Stack, cli

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]

FILES = """
name: swarm-files
task:
  command: [python3, -m, fixtures.write_outputs, "{{outdir}}", "{{index}}", "{{size}}"]
outputs: ["*.bin", "notes/*.txt"]
max_output_bytes: 8KiB
{extra}
params:
  size: [3000, 9000]
  n: {{range: [0, 6]}}
"""


def expected_bin(index: int, size: int) -> bytes:
    return (hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1))[:size]


def test_command_sweep_files_and_logs_come_back_from_worker_containers(stack: Stack, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, FILES.format(extra=""))
    out = tmp_path / "res" / "files.csv"
    r = cli(
        stack,
        "run",
        str(path),
        "--backend",
        "swarm",
        "-w",
        "2",
        "-o",
        str(out),
        *stack.options(),
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr  # the 9000-byte points are over the cap
    rows = {int(row["index"]): row for row in read_csv(out)}
    assert len(rows) == 12
    for index, row in rows.items():
        point = tmp_path / "res" / "files" / "points" / str(index)
        if row["size"] == "9000":
            assert row["status"] == "error"
            assert row["error"] == "output file data.bin is 9000 bytes, over max_output_bytes (8192)"
            assert not point.exists()
        else:
            assert row["status"] == "ok", row
            assert (point / "data.bin").read_bytes() == expected_bin(index, 3000)
            assert (point / "notes" / "summary.txt").read_text() == f"index={index}\n"
            assert row["files"] == "data.bin notes/summary.txt"
    sid = load_sweep(path).id
    for index in rows:
        log = cli(stack, "logs", "--point", str(index), "--sweep", sid, cwd=tmp_path)
        assert f"point {index}: starting" in log.stdout and f"point {index}: wrote" in log.stdout
    show = cli(stack, "show", sid, "0", cwd=tmp_path)
    node = stack.client.info()["Name"]
    assert f"node {node}" in show.stdout and "exit 0" in show.stdout, show.stdout
    digest = hashlib.sha256(expected_bin(0, 3000)).hexdigest()
    assert f"data.bin  3000 bytes  sha256 {digest}" in show.stdout
    queue = SweepQueue(redis.Redis.from_url(stack.backend().redis_url()), "swarmrun")
    assert not list(queue.connection.scan_iter(match=f"swarmrun:sweep:{sid}:out:*"))

    again = cli(stack, "run", str(path), "--backend", "swarm", "-o", str(out), *stack.options(), cwd=tmp_path)
    assert "Output files: 0 fetched" in again.stderr, again.stderr


def test_a_bind_mount_and_a_named_volume_are_in_every_worker(stack: Stack, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "out").mkdir(parents=True)
    (shared / "input.txt").write_text("from the host\n")
    volume = f"{stack.name}-vol"
    mounts = [
        "--mount",
        f"type=bind,source={shared},target=/shared",
        "--mount",
        f"type=volume,source={volume},target=/vol,volume-label={NAMESPACE_LABEL}={stack.name}",
    ]
    up = cli(stack, "up", "-r", "2", *stack.options(), *mounts, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    service = stack.client.services.get(f"{stack.name}_worker")
    version = service.attrs["Version"]["Index"]
    assert cli(stack, "up", *stack.options(), *mounts, cwd=tmp_path).returncode == 0
    service.reload()
    assert service.attrs["Version"]["Index"] == version  # the same mounts change nothing
    specs = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert {(m["Type"], m["Target"]) for m in specs} == {("bind", "/shared"), ("volume", "/vol")}
    for container in stack.worker_containers():
        code, output = container.exec_run(["sh", "-c", "cat /shared/input.txt && touch /vol/ok && ls /vol"])
        assert code == 0 and b"from the host" in output and b"ok" in output, output

    # outputs_dir on the bind mount: files are moved there by the workers, only names travel.
    path = write_sweep(tmp_path, FILES.format(extra="outputs_dir: /shared/out").replace("9000", "4000"))
    r = cli(stack, "run", str(path), "--backend", "swarm", "-o", str(tmp_path / "m.csv"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sid = load_sweep(path).id
    base = shared / "out" / f"swarm-files-{sid[:8]}" / "points"
    for row in read_csv(tmp_path / "m.csv"):
        index, size = int(row["index"]), int(row["size"])
        assert (base / str(index) / "data.bin").read_bytes() == expected_bin(index, size)

    bad = cli(stack, "up", *stack.options(), "--mount", "type=bind,source=relative,target=/x", cwd=tmp_path)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
