"""`swarmrun up --tls` on the one-node swarm: Redis speaks only TLS on its published port, the CLI
and the workers verify it against the stack's own CA, a plain client and a wrong CA are refused."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarmrun.backends.tls import issue
from swarmrun.errors import ExitCode
from tests.conftest import read_csv, write_sweep
from tests.swarm.conftest import Stack, cli

pytestmark = pytest.mark.swarm

SWEEP = """
name: tls-sweep
task: {call: "fixtures.tasks:nap"}
params:
  seconds: [0.01]
  i: {range: [0, 60]}
"""


def _state(stack: Stack) -> dict[str, str]:
    files = [p for p in (stack.home / "stacks").glob(f"*-{stack.name}.json")]
    assert len(files) == 1, files
    return dict(json.loads(files[0].read_text()))


@pytest.mark.timeout(600)
def test_a_tls_stack_runs_a_sweep_over_rediss_and_refuses_plain_and_wrong_ca(
    stack: Stack, tmp_path: Path
) -> None:
    up = cli(stack, "up", "--tls", "-r", "2", *stack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert f"Redis at rediss://:***@127.0.0.1:{stack.port}/0?ssl_ca_certs=" in up.stdout, up.stdout

    # The CA (never its key) is in the stack's state; the server key only in the Docker secret.
    state = _state(stack)
    assert state["ca"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in json.dumps(state)
    secrets = {
        s.name
        for s in stack.client.secrets.list(filters={"label": f"com.docker.stack.namespace={stack.name}"})
    }
    assert {f"{stack.name}_redis_tls_{k}" for k in ("ca", "cert", "key")} <= secrets
    worker = stack.client.services.get(f"{stack.name}_worker")
    env = worker.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "SWARMRUN_REDIS_URL=rediss://redis:6379/0" in env, env

    # A sweep, end to end over TLS, on the stack's workers (which reach Redis over TLS too).
    out = tmp_path / "out.csv"
    run = cli(stack, "run", write_sweep(tmp_path, SWEEP).as_posix(), "-o", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(60))
    assert {r["status"] for r in rows} == {"ok"}
    assert all(r["worker"] and "-" in r["worker"] for r in rows), "points ran on the stack's workers"

    # No plain listener: a plain client on the published port gets no answer it can read ...
    password = state["password"]
    plain = redis.Redis.from_url(
        f"redis://:{password}@127.0.0.1:{stack.port}/0", socket_connect_timeout=3, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        try:
            answer = raw.recv(100)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert b"PONG" not in answer and b"NOAUTH" not in answer, answer
    # ... and inside the container Redis listens on nothing but its TLS port.
    redis_task = stack.client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={stack.name}_redis"}
    )[0]
    listening = redis_task.exec_run(["sh", "-c", "redis-cli -p 6379 ping 2>&1; echo rc=$?"]).output.decode()
    assert "PONG" not in listening, listening

    # A wrong CA: one line, exit code 4 at once (no waiting for a Redis that will never verify).
    wrong = tmp_path / "wrong-ca.pem"
    wrong.write_bytes(issue(["127.0.0.1"]).ca)
    bad = cli(stack, "status", "--redis-ca", str(wrong), cwd=tmp_path, timeout=60)
    assert bad.returncode == ExitCode.REDIS_UNAVAILABLE, (bad.returncode, bad.stderr)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not verify against the CA" in lines[0], bad.stderr
    assert "Traceback" not in bad.stderr

    # A stack not made here: --redis-url rediss://... with --redis-ca (SWARMRUN_REDIS_CA) works ...
    ca = tmp_path / "ca.pem"
    ca.write_text(state["ca"])
    url = f"rediss://:{password}@127.0.0.1:{stack.port}/0"
    other_env = {k: v for k, v in stack.env.items() if k != "SWARMRUN_STACK"}
    status = cli(stack, "status", "--redis-url", url, "--redis-ca", str(ca), cwd=tmp_path, env=other_env)
    assert status.returncode == 0, status.stderr
    assert "60 done (60 ok" in status.stdout, status.stdout
    by_env = cli(
        stack, "ls", cwd=tmp_path, env={**other_env, "SWARMRUN_REDIS_URL": url, "SWARMRUN_REDIS_CA": str(ca)}
    )
    assert by_env.returncode == 0 and "tls-sweep" in by_env.stdout, by_env.stderr
    # ... and without a CA the system's trust store does not know the stack's CA: refused, one line.
    unknown = cli(stack, "ls", "--redis-url", url, cwd=tmp_path, env=other_env, timeout=60)
    assert unknown.returncode == ExitCode.REDIS_UNAVAILABLE, unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr

    # `up` again with the same options changes nothing (no new CA, the same services).
    version = worker.attrs["Version"]["Index"]
    again = cli(stack, "up", "--tls", *stack.options(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _state(stack)["ca"] == state["ca"]
    worker.reload()
    assert worker.attrs["Version"]["Index"] == version

    down = cli(stack, "down", "--volumes", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    left = {s.name for s in stack.client.secrets.list() if s.name.startswith(f"{stack.name}_")}
    assert not left, left
    assert not list((stack.home / "stacks").glob(f"*-{stack.name}.*")), "state and CA file forgotten"


@pytest.mark.timeout(600)
def test_the_tls_stack_file_deploys_and_runs_a_sweep_with_the_ca_given(stack: Stack, tmp_path: Path) -> None:
    """stacks/swarmrun-tls.yml as its header says: certificates by `python -m swarmrun.backends.tls`,
    `docker stack deploy`, then the CLI with the password file and `SWARMRUN_REDIS_CA`."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT

    top = tmp_path / "checkout"
    (top / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "stacks" / "swarmrun-tls.yml", top / "stacks")
    (top / "redis_password").write_text("file-deployed-password\n")
    made = subprocess.run(
        [sys.executable, "-m", "swarmrun.backends.tls", str(top / "tls")], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    deploy_env = {
        **stack.env,
        "SWARMRUN_IMAGE": stack.image,
        "SWARMRUN_REDIS_IMAGE": stack.config.redis_image,
        "SWARMRUN_REDIS_PORT": str(stack.port),
        "SWARMRUN_HEARTBEAT_TTL": "5",
    }
    deployed = subprocess.run(
        ["docker", "stack", "deploy", "-c", "stacks/swarmrun-tls.yml", stack.name],
        cwd=top,
        env=deploy_env,
        capture_output=True,
        text=True,
    )
    assert deployed.returncode == 0, deployed.stderr
    env = {
        **stack.env,
        "SWARMRUN_REDIS_PASSWORD_FILE": str(top / "redis_password"),
        "SWARMRUN_REDIS_CA": str(top / "tls" / "redis_tls_ca.pem"),
    }
    out = tmp_path / "out.csv"
    run = cli(stack, "run", write_sweep(tmp_path, SWEEP).as_posix(), "-o", str(out), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(60)) and {r["status"] for r in rows} == {"ok"}
    status = cli(stack, "status", cwd=tmp_path, env=env)
    assert status.returncode == 0 and "60 done (60 ok" in status.stdout, status.stderr
    no_ca = cli(stack, "status", cwd=tmp_path, env={k: v for k, v in env.items() if k != "SWARMRUN_REDIS_CA"})
    assert no_ca.returncode == ExitCode.REDIS_UNAVAILABLE and "--redis-ca" in no_ca.stderr, no_ca.stderr


def test_encrypt_network_is_one_line_and_creates_nothing_when_the_kernel_cannot(
    stack: Stack, tmp_path: Path
) -> None:
    from swarmrun.backends.swarm.encryption import require
    from swarmrun.errors import DockerUnavailable

    try:
        require(stack.client, stack.image)
    except DockerUnavailable as e:
        reason = str(e)
    else:
        pytest.skip("this engine's kernel can do IPsec: tests/cluster/test_encrypt.py runs a sweep on it")
    assert "cannot encrypt overlay traffic" in reason, reason
    up = cli(stack, "up", "--encrypt-network", *stack.options(), cwd=tmp_path, timeout=120)
    assert up.returncode == ExitCode.DOCKER_UNAVAILABLE, (up.returncode, up.stderr)
    assert up.stderr.strip() == f"Error: {reason}", up.stderr
    assert not stack.client.networks.list(names=[f"{stack.name}_net"])
    assert not stack.client.secrets.list(filters={"name": stack.name})
    assert not stack.client.services.list(filters={"name": stack.name})
