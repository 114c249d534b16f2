"""`swarmrun up --backend kubernetes --tls` on the test cluster: the TLS Secret, Redis on TLS only,
a sweep whose workers and CLI verify Redis against the stack's CA, a plain client and a wrong CA
refused."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarmrun.backends.kubernetes import manifests as km
from swarmrun.backends.tls import issue
from swarmrun.errors import ExitCode
from tests.conftest import read_csv, write_sweep
from tests.kube.conftest import KUBECONFIG, KubeStack

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(420)]

SWEEP = """
name: kube-tls
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.02]
  i: {range: [0, 40]}
"""


@contextlib.contextmanager
def _forward(kstack: KubeStack):  # type: ignore[no-untyped-def]
    """A port-forward to the stack's Redis from this process (KUBECONFIG set only meanwhile)."""
    from swarmrun.backends.kubernetes.backend import KubernetesBackend
    from swarmrun.backends.swarm.stack import StackConfig

    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    try:
        backend = KubernetesBackend(StackConfig(name=kstack.name), namespace=kstack.namespace)
        with backend.port_forward() as forward:
            yield backend, forward.port
    finally:
        if before is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = before


def test_a_tls_stack_on_kubernetes_runs_a_sweep_and_refuses_plain_and_a_wrong_ca(
    kstack: KubeStack, tmp_path: Path
) -> None:
    up = kstack.cli("up", "--tls", "-r", "2", *kstack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    secret = kstack.kube.core.read_namespaced_secret(km.tls_secret_name_for(kstack.name), kstack.namespace)
    assert set(secret.data) == {"redis_tls_ca", "redis_tls_cert", "redis_tls_key"}
    ca = base64.b64decode(secret.data["redis_tls_ca"])

    out = tmp_path / "out.csv"
    run = kstack.cli("run", write_sweep(tmp_path, SWEEP).as_posix(), "-o", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(40))
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["worker"].startswith(f"{kstack.name}-worker-") for r in rows), "ran on the pods"

    with _forward(kstack) as (backend, port):
        url = backend.redis_url(port)
        assert url.startswith(f"rediss://:{backend.password()}@127.0.0.1:{port}/0?ssl_ca_certs=")
        plain = redis.Redis.from_url(
            f"redis://:{backend.password()}@127.0.0.1:{port}/0",
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )
        with pytest.raises(redis.ConnectionError):
            plain.ping()
        verified = redis.Redis.from_url(url, socket_connect_timeout=5)
        assert verified.ping()
        verified.close()
    (tmp_path / "ca.pem").write_bytes(ca)

    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(issue(["127.0.0.1"]).ca)
    bad = kstack.cli("status", "--redis-ca", str(wrong), cwd=tmp_path, timeout=120)
    assert bad.returncode == ExitCode.REDIS_UNAVAILABLE, (bad.returncode, bad.stderr)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not verify against the CA" in lines[0], bad.stderr

    down = kstack.cli("down", "--volumes", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    names = {s.metadata.name for s in kstack.kube.core.list_namespaced_secret(kstack.namespace).items}
    assert km.tls_secret_name_for(kstack.name) not in names
