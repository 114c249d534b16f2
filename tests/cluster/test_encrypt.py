"""`up --encrypt-network` on the three-node cluster: a sweep crosses nodes on an IPsec-encrypted
overlay, or, on a kernel without IPsec ESP / AES-GCM, `up` refuses in one line and creates nothing.

Which of the two runs depends on the kernel the node containers share with this machine; the other
is skipped with the probe's own reason (never counted as a pass).
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import docker
import pytest

from swarmrun.backends.swarm.encryption import OK_LINE, probe
from swarmrun.errors import ExitCode
from tests.cluster.conftest import ClusterStack
from tests.conftest import read_csv, write_sweep

pytestmark = pytest.mark.cluster

SWEEP = """
name: encrypted-net
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.05]
  i: {range: [0, 120]}
"""


def _node_probe(cstack: ClusterStack) -> str:
    """The probe as `up` runs it, in a container on the cluster's manager."""
    with closing(cstack.cluster.manager_client()) as m:
        out = m.containers.run(
            cstack.image,
            entrypoint=["python3", "-m", "swarmrun.backends.swarm.encryption"],
            command=[],
            network_mode="none",
            cap_add=["NET_ADMIN"],
            remove=True,
        )
    return bytes(out).decode().strip() if out else ""


def _node_probe_or_reason(cstack: ClusterStack) -> str:
    try:
        return _node_probe(cstack)
    except docker.errors.ContainerError as e:  # a non-zero exit: the probe's reason is on stderr
        return bytes(e.stderr or b"").decode().strip()


def test_a_sweep_crosses_nodes_on_an_encrypted_network(cstack: ClusterStack, tmp_path: Path) -> None:
    line = _node_probe_or_reason(cstack)
    if OK_LINE not in line:
        pytest.skip(f"the nodes' kernel cannot do IPsec: {line or probe()}")
    up = cstack.cli("up", "--encrypt-network", "-r", "3", *cstack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    with closing(cstack.cluster.manager_client()) as m:
        network = m.networks.get(f"{cstack.name}_net")
        assert "encrypted" in (network.attrs.get("Options") or {}), network.attrs
    out = tmp_path / "out.csv"
    run = cstack.cli("run", write_sweep(tmp_path, SWEEP).as_posix(), "-o", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(120))
    nodes = {r["worker"].split(".")[0].rsplit("-", 1)[0] for r in rows}
    assert {"worker1", "worker2"} <= nodes, nodes  # traffic crossed the encrypted overlay


def test_up_encrypt_network_says_in_one_line_why_the_kernel_cannot(
    cstack: ClusterStack, tmp_path: Path
) -> None:
    line = _node_probe_or_reason(cstack)
    if OK_LINE in line:
        pytest.skip("the nodes' kernel can do IPsec: the sweep test covers --encrypt-network")
    up = cstack.cli("up", "--encrypt-network", "-r", "1", *cstack.options(), cwd=tmp_path)
    assert up.returncode == ExitCode.DOCKER_UNAVAILABLE, (up.returncode, up.stderr)
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1, up.stderr
    assert "--encrypt-network" in lines[0] and "cannot encrypt overlay traffic" in lines[0], lines[0]
    assert line.removeprefix("ipsec: ") in lines[0], (line, lines[0])  # the kernel's reason, named
    assert "Traceback" not in up.stderr
    with closing(cstack.cluster.manager_client()) as m:
        assert not m.networks.list(names=[f"{cstack.name}_net"])
        assert not m.services.list(filters={"name": cstack.name})
