"""The Redis password never appears in anything swarmrun prints, nor in the worker or Redis logs.

A whole one-node-swarm session (up, run, scale, status, logs, results, errors, --debug, down) is
run as a user types it; every byte printed, the results file and the containers' logs are
scanned for the password (and its URL-quoted form). The same session runs on a TLS stack
(`up --tls`), where the scan also looks for the Redis server's private key.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from swarmrun.backends.tls import issue
from tests.conftest import write_sweep
from tests.swarm.conftest import Stack, cli

pytestmark = pytest.mark.swarm

SWEEP = """
name: leak-check
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [0.02]
  i: {{range: [0, {points}]}}
"""


FAILING = """
name: leak-check-failing
task: {call: "fixtures.tasks:fail_on"}
params:
  x: {range: [0, 5]}
"""


def _key_lines(stack: Stack) -> list[str]:
    """The base64 lines of the TLS stack's server key, read where only Redis has it: its secret."""
    redis_container = stack.client.containers.list(
        filters={"label": f"com.docker.swarm.service.name={stack.name}_redis"}
    )[0]
    pem = redis_container.exec_run(["cat", "/run/secrets/redis_tls_key"]).output.decode()
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    assert lines and "PRIVATE KEY" in pem, pem
    return lines


@pytest.mark.timeout(600)
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_redis_password_never_appears_in_any_output(stack: Stack, tmp_path: Path, tls: bool) -> None:
    printed: list[tuple[str, str]] = []  # (what ran, what it printed)

    def step(
        *args: str, code: int | None = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = cli(stack, *args, cwd=tmp_path, env=env)
        printed.append((" ".join(args), r.stdout + r.stderr))
        if code is not None:
            assert r.returncode == code, (args, r.returncode, r.stderr)
        return r

    step("up", "-r", "1", *(["--tls"] if tls else []), *stack.options())
    password = stack.backend()._password(create=False)
    key_lines = _key_lines(stack) if tls else []
    assert len(password) >= 16
    good = write_sweep(tmp_path, SWEEP.format(points=40))
    out = tmp_path / "out.csv"
    step("run", str(good), "-w", "2", "-o", str(out), *stack.options())
    step("--debug", "status")
    step("scale", "3")
    step("status")
    step("ls")
    step("logs", "--tail", "200")
    step("--debug", "logs", "--tail", "20")
    step("results", "-o", str(tmp_path / "again.jsonl"))
    # errors: a sweep whose points fail, a bad sweep file, an unknown sweep, a wrong password
    failing = write_sweep(tmp_path, FAILING, name="failing.yaml")
    step("run", str(failing), "-o", str(tmp_path / "failed.csv"), "--no-check", *stack.options(), code=None)
    step("run", str(write_sweep(tmp_path, "task: {call: 'x'}\n", name="bad.yaml")), code=3)
    step("status", "ffffffffffff", code=6)
    step("--debug", "status", "ffffffffffff", code=None)
    bad = tmp_path / "bad"
    bad.write_text("not-the-password\n")
    step("status", code=4, env={**stack.env, "SWARMRUN_REDIS_PASSWORD_FILE": str(bad)})
    step("--debug", "status", code=None, env={**stack.env, "SWARMRUN_REDIS_PASSWORD_FILE": str(bad)})
    step("worker", "--burst", "--wait", "1", "--redis-url", f"redis://:{password}@127.0.0.1:1/0", code=4)
    if tls:  # a CA that did not sign Redis's certificate; a plain URL to the TLS port
        wrong = tmp_path / "wrong-ca.pem"
        wrong.write_bytes(issue(["127.0.0.1"]).ca)
        step("status", "--redis-ca", str(wrong), code=4)
        step("--debug", "status", "--redis-ca", str(wrong), code=None)
        step("ls", "--redis-url", f"rediss://:{password}@127.0.0.1:{stack.port}/0", code=4)

    logs = []
    for service in ("worker", "redis"):
        for container in stack.client.containers.list(
            all=True, filters={"label": f"com.docker.swarm.service.name={stack.name}_{service}"}
        ):
            logs.append((f"{service} container {container.name}", container.logs().decode(errors="replace")))
    assert any("worker" in what for what, _ in logs), "no worker container logs to scan"
    step("down", "--volumes")

    files = [(str(p), p.read_text(errors="replace")) for p in (out, tmp_path / "again.jsonl") if p.exists()]
    forms = {password, quote(password, safe="")}
    leaks = [what for what, text in printed + logs + files if any(form in text for form in forms)]
    assert not leaks, f"the Redis password appears in: {leaks}"
    key_leaks = [
        what
        for what, text in printed + logs + files
        if "PRIVATE KEY" in text or any(k in text for k in key_lines)
    ]
    assert not key_leaks, f"TLS key material appears in: {key_leaks}"
    assert any("***" in text for _, text in printed), "the redacted URL was printed somewhere"
