"""`--mount` on Kubernetes, in real pods: a bind mount (hostPath), a named volume (the claim of that
name), a tmpfs (a memory emptyDir); points read an input from one, write to the others, and their
output files come back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_csv, write_sweep
from tests.kube.conftest import PV_ROOT, KubeStack

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(420)]

# No braces in the program: `{i}` is the only placeholder.
PROGRAM = (
    "import os, sys; i = sys.argv[1]; word = open('/data/input.txt').read().strip(); "
    "open('/scratch/t', 'w').write(word + i); seen = open('/scratch/t').read(); "
    "open('/results/point-' + i, 'w').write(seen); "
    "open(os.path.join(os.environ['SWARMRUN_POINT_DIR'], 'out.txt'), 'w').write(seen); print(seen)"
)
SWEEP = f"""
name: kube-mounts
task:
  command: [python3, -c, "{PROGRAM}", "{{i}}"]
outputs: ["out.txt"]
params:
  i: {{range: [0, 8]}}
"""


def test_bind_volume_and_tmpfs_mounts_in_the_pods(kstack: KubeStack, tmp_path: Path) -> None:
    kstack.add_volume()
    data = PV_ROOT / f"{kstack.namespace}-input"  # the node is this machine: a hostPath is a host dir
    data.mkdir(parents=True)
    kstack.volumes.append(("", data))
    (data / "input.txt").write_text("hello\n")
    results = kstack.add_claim("results")
    mounts = [
        "--mount",
        f"type=bind,source={data},target=/data,readonly",
        "--mount",
        "type=volume,source=results,target=/results",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1048576",
    ]
    up = kstack.cli("up", "-r", "2", *kstack.options(), *mounts, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    worker = kstack.kube.apps.read_namespaced_deployment("swarmrun-worker", kstack.namespace)
    pod = worker.spec.template.spec
    kinds = {v.name: v for v in pod.volumes}
    assert any(v.host_path and v.host_path.path == str(data) for v in kinds.values())
    assert any(
        v.persistent_volume_claim and v.persistent_volume_claim.claim_name == "results"
        for v in kinds.values()
    )
    assert any(v.empty_dir and v.empty_dir.medium == "Memory" for v in kinds.values())
    again = kstack.cli("up", *kstack.options(), *mounts, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        kstack.kube.apps.read_namespaced_deployment("swarmrun-worker", kstack.namespace).metadata.generation
        == worker.metadata.generation
    )  # the same mounts again change nothing

    path = write_sweep(tmp_path, SWEEP)
    out = tmp_path / "out" / "r.csv"
    run = kstack.cli("run", str(path), "-o", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr + run.stdout
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(8))
    assert {r["status"] for r in rows} == {"ok"}, rows
    for r in rows:
        i = int(r["i"])
        assert r["value"] == f"hello{i}", r
        assert (tmp_path / "out" / "r" / "points" / str(i) / "out.txt").read_text() == f"hello{i}"
        assert (results / f"point-{i}").read_text() == f"hello{i}"  # written through the claim
