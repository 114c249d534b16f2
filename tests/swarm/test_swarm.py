"""Sweeps on a real swarm: the stack, scaling, killed containers, the Redis password, the stack file."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Worker

from swarmrun.backends.swarm.stack import NAMESPACE_LABEL, render
from swarmrun.execution.queue import SweepQueue
from tests.conftest import read_csv, swarmrun_env, wait_until, write_sweep
from tests.swarm.conftest import (
    REDIS_IMAGE,
    SESSION,
    TEST_LABEL,
    Stack,
    cli,
    compose_workers,
    ping,
    remove_labelled,
)

pytestmark = pytest.mark.swarm

NAP = """
name: swarm-nap
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  i: {{range: [0, {points}]}}
"""


def queue_of(stack: Stack) -> SweepQueue:
    return SweepQueue(redis.Redis.from_url(stack.backend().redis_url()), "swarmrun")


def test_sweep_on_four_replicas_records_each_point_once(stack: Stack, tmp_path: Path) -> None:
    path = write_sweep(tmp_path, NAP.format(seconds=0.05, points=200))
    out = tmp_path / "out.csv"
    r = cli(
        stack,
        "run",
        str(path),
        "--backend",
        "auto",
        "-w",
        "4",
        "-o",
        str(out),
        *stack.options(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "backend: swarm (this Docker engine is a swarm manager)" in r.stderr
    assert "workers 4/4" in r.stderr
    rows = read_csv(out)
    assert sorted(int(row["i"]) for row in rows) == list(range(200))
    assert {row["status"] for row in rows} == {"ok"}
    slots = {row["worker"].split(".")[0] for row in rows}
    assert len(slots) >= 3, slots  # the work spread over the replicas

    status = cli(stack, "status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "200 done (200 ok" in status.stdout and "workers    4/4 running" in status.stdout
    logs = cli(stack, "logs", "--tail", "5", cwd=tmp_path)
    assert logs.returncode == 0 and "worker." in logs.stdout and "@" in logs.stdout


def test_up_is_idempotent_and_down_removes_everything(stack: Stack, tmp_path: Path) -> None:
    first = cli(stack, "up", "-r", "2", *stack.options(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "workers 2/2 running" in first.stdout
    service = stack.client.services.get(f"{stack.name}_worker")
    version = service.attrs["Version"]["Index"]
    again = cli(stack, "up", *stack.options(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    service.reload()
    assert service.attrs["Version"]["Index"] == version
    assert stack.client.services.get(f"{stack.name}_redis").attrs["Spec"]["TaskTemplate"]["Placement"][
        "Constraints"
    ] == ["node.role == manager"]

    down = cli(stack, "down", "--volumes", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    label = {"label": f"{NAMESPACE_LABEL}={stack.name}"}
    for kind in (stack.client.services, stack.client.networks, stack.client.secrets, stack.client.volumes):
        assert kind.list(filters=label) == []


def test_redis_requires_the_password_from_the_secret(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "1", *stack.options(), cwd=tmp_path).returncode == 0
    url = stack.backend().redis_url()
    anonymous = redis.Redis(host="127.0.0.1", port=stack.port, socket_connect_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=stack.port, password="wrong").ping()
    assert redis.Redis.from_url(url).ping()
    env = stack.client.services.get(f"{stack.name}_worker").attrs["Spec"]["TaskTemplate"]["ContainerSpec"][
        "Env"
    ]
    password = url.split(":")[2].split("@")[0]
    assert not any(password in e for e in env)  # only the secret's path is in the environment
    assert "SWARMRUN_REDIS_PASSWORD_FILE=/run/secrets/redis_password" in env
    # a wrong password is one clear line, not a hang
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    r = cli(
        stack, "status", cwd=tmp_path, env={**stack.env, "SWARMRUN_REDIS_PASSWORD_FILE": str(bad)}, timeout=60
    )
    assert r.returncode == 4 and "refused the password" in r.stderr


def measure_rate(queue: SweepQueue, sid: str, seconds: float) -> float:
    start_done, start = queue.progress(sid).done, time.monotonic()
    time.sleep(seconds)
    return (queue.progress(sid).done - start_done) / (time.monotonic() - start)


def test_scaling_one_to_four_raises_throughput(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "1", *stack.options(), cwd=tmp_path).returncode == 0
    path = write_sweep(tmp_path, NAP.format(seconds=0.2, points=400))
    sid = cli(stack, "submit", str(path), cwd=tmp_path).stdout.strip()
    queue = queue_of(stack)
    wait_until(lambda: queue.progress(sid).done >= 10, 60, message="the first results")
    one = measure_rate(queue, sid, 8)
    [first] = [c.id for c in stack.worker_containers()]
    scaled = cli(stack, "scale", "4", cwd=tmp_path)
    assert scaled.returncode == 0 and "workers 4/4 running" in scaled.stdout, scaled.stderr + scaled.stdout
    assert first in {c.id for c in stack.worker_containers()}  # scaling up restarts no running worker
    time.sleep(3)
    four = measure_rate(queue, sid, 8)
    print(f"throughput: 1 replica {one:.2f} points/s, 4 replicas {four:.2f} points/s, ratio {four / one:.2f}")
    assert four / one >= 2.5
    wait_until(lambda: queue.progress(sid).complete, 120, message="sweep complete")
    p = queue.progress(sid)
    assert (p.done, p.ok, p.error) == (400, 400, 0)


def test_scale_down_and_killed_containers_lose_no_point(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "4", *stack.options(), cwd=tmp_path).returncode == 0
    path = write_sweep(tmp_path, NAP.format(seconds=0.1, points=400))
    out = tmp_path / "out.csv"
    manager = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "run", str(path), "-o", str(out), "-q"],
        env=stack.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queue = queue_of(stack)
        sid = wait_until(lambda: next(iter(queue.sweep_ids()), None), 60, message="submitted")
        wait_until(lambda: queue.progress(sid).done >= 40, 60, message="first results")
        victims = stack.worker_containers()[:2]
        for victim in victims:
            victim.kill()  # SIGKILL, mid-chunk: its chunk must be recovered
        wait_until(lambda: queue.progress(sid).done >= 150, 120, message="progress after the kill")
        scaled = cli(stack, "scale", "1", cwd=tmp_path)
        assert scaled.returncode == 0, scaled.stderr
        stdout, stderr = manager.communicate(timeout=300)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 0, stderr
    rows = read_csv(out)
    assert sorted(int(row["i"]) for row in rows) == list(range(400))
    assert {row["status"] for row in rows} == {"ok"}
    p = queue.progress(sid)
    assert (p.done, p.ok) == (400, 400) and p.executions >= 400
    print(f"killed 2 containers and scaled 4 -> 1: lost=0, duplicates executed={p.duplicates}")


def test_a_kill_past_the_grace_period_only_costs_a_rerun(stack: Stack, tmp_path: Path) -> None:
    """Workers stopped by a scale-down get 1 s to finish a 12 s point: Docker SIGKILLs them mid-point.

    Their chunks are recovered and run again on the worker that stays; every point still ends with
    exactly one result.
    """
    up = cli(stack, "up", "-r", "3", "--grace-period", "1", *stack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    path = write_sweep(tmp_path, NAP.format(seconds=12, points=3) + "chunk: 1\n")
    sid = cli(stack, "submit", str(path), cwd=tmp_path).stdout.strip()
    queue = queue_of(stack)

    def busy() -> int:
        return sum(w.get_state() == "busy" for w in Worker.all(connection=queue.connection))

    wait_until(lambda: busy() >= 3, 90, message="three workers each running a point")
    since = int(time.time()) - 1
    scaled = cli(stack, "scale", "1", cwd=tmp_path)
    assert scaled.returncode == 0, scaled.stderr

    def exit_codes() -> list[int]:
        # Swarm deletes the tasks a scale-down removes; the engine's events keep how they ended.
        events = stack.client.events(
            since=since,
            until=int(time.time()) + 1,
            filters={"event": "die", "label": f"com.docker.swarm.service.name={stack.name}_worker"},
            decode=True,
        )
        return [int(e["Actor"]["Attributes"]["exitCode"]) for e in events]

    with contextlib.suppress(AssertionError):  # the assertion below says what was seen
        wait_until(lambda: exit_codes().count(137) >= 2, 30, message="the stopped workers' exit codes")
    codes = exit_codes()
    assert codes.count(137) == 2, f"expected two workers killed past the grace period, got exit codes {codes}"

    wait_until(lambda: queue.progress(sid).complete, 180, message="sweep complete on the remaining worker")
    out = tmp_path / "out.csv"
    assert cli(stack, "results", sid, "-o", str(out), cwd=tmp_path).returncode == 0
    rows = read_csv(out)
    assert sorted(int(row["i"]) for row in rows) == list(range(3))
    assert {row["status"] for row in rows} == {"ok"}
    p = queue.progress(sid)
    assert (p.done, p.ok, p.error, p.timeout) == (3, 3, 0, 0)
    print(f"2 workers SIGKILLed past a 1 s grace period: lost=0, duplicates executed={p.duplicates}")


def _normal(spec: dict) -> dict:
    """The parts of a worker service spec `up` and `docker stack deploy` must agree on."""
    task = spec["TaskTemplate"]
    container = task["ContainerSpec"]
    return {
        "image": container["Image"].split("@")[0],
        "env": sorted(container.get("Env", [])),
        "init": container.get("Init"),
        "grace": container.get("StopGracePeriod"),
        "secrets": [s["File"]["Name"] for s in container.get("Secrets", [])],
        "restart": {k: task.get("RestartPolicy", {}).get(k) for k in ("Condition", "Delay")},
        "placement": task.get("Placement", {}).get("Constraints"),
        "resources": task.get("Resources") or None,
        "endpoint": spec.get("EndpointSpec", {}).get("Mode"),
        "replicas": spec["Mode"]["Replicated"]["Replicas"],
        "role": spec["Labels"].get("swarmrun.role"),
    }


def test_docker_stack_deploy_of_the_stack_file_runs_a_sweep(stack: Stack, tmp_path: Path) -> None:
    repo_file = Path(__file__).resolve().parents[2] / "stacks" / "swarmrun.yml"
    password = tmp_path / "redis_password"
    password.write_text("stack-file-secret\n")
    env = {
        **stack.env,
        "SWARMRUN_IMAGE": stack.image,
        "SWARMRUN_REDIS_IMAGE": REDIS_IMAGE,
        "SWARMRUN_REDIS_PORT": str(stack.port),
        "SWARMRUN_REDIS_PASSWORD_FILE": str(password),
    }
    deploy = subprocess.run(
        ["docker", "stack", "deploy", "-c", str(repo_file), stack.name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode == 0, deploy.stderr
    path = write_sweep(tmp_path, NAP.format(seconds=0.02, points=60))
    out = tmp_path / "out.csv"
    r = cli(stack, "run", str(path), "-o", str(out), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert len(read_csv(out)) == 60

    # `swarmrun up` with the same settings deploys what the file describes
    twin = Stack(stack.client, stack.image, tmp_path / "twin-home", "")
    try:
        assert cli(twin, "up", "-r", "2", *twin.options(), cwd=tmp_path).returncode == 0
        from_file = stack.client.services.get(f"{stack.name}_worker").attrs["Spec"]
        from_up = stack.client.services.get(f"{twin.name}_worker").attrs["Spec"]
        assert _normal(from_file) == _normal(from_up)
    finally:
        remove_labelled(stack.client, f"{NAMESPACE_LABEL}={twin.name}")
        subprocess.run(["docker", "stack", "rm", stack.name], capture_output=True)


def test_the_stack_file_runs_under_docker_compose(stack: Stack, tmp_path: Path) -> None:
    compose_file = tmp_path / "swarmrun.yml"
    compose_file.write_text(
        render(stack.config).replace(
            f"file: {stack.config.password_file}", f"file: {tmp_path / 'redis_password'}"
        )
    )
    (tmp_path / "redis_password").write_text("compose-secret\n")
    project = f"{stack.name}c"
    compose = ["docker-compose", "-f", str(compose_file), "-p", project]
    up = subprocess.run(
        [*compose, "--compatibility", "up", "-d"], capture_output=True, text=True, timeout=180
    )
    try:
        assert up.returncode == 0, up.stderr
        url = f"redis://:compose-secret@127.0.0.1:{stack.port}/0"
        env = {**stack.env, "SWARMRUN_REDIS_URL": url}
        env.pop("SWARMRUN_STACK")
        client = wait_until(lambda: ping(url), 60, message="compose Redis")
        workers = compose_workers(project)
        assert len(workers) == 2  # deploy.replicas, honoured with --compatibility
        path = write_sweep(tmp_path, NAP.format(seconds=0.02, points=40))
        sid = cli(stack, "submit", str(path), cwd=tmp_path, env=env).stdout.strip()
        queue = SweepQueue(client, "swarmrun")
        wait_until(lambda: queue.progress(sid).complete, 120, message="sweep complete under compose")
        out = tmp_path / "out.jsonl"
        assert cli(stack, "results", sid, "-o", str(out), cwd=tmp_path, env=env).returncode == 0
        assert sorted(json.loads(line)["index"] for line in out.read_text().splitlines()) == list(range(40))
    finally:
        subprocess.run([*compose, "down", "-v"], capture_output=True, timeout=120)


def test_stack_labels_mark_test_resources(stack: Stack, tmp_path: Path) -> None:
    assert cli(stack, "up", "-r", "1", *stack.options(), cwd=tmp_path).returncode == 0
    label = {"label": f"{TEST_LABEL}={SESSION}"}
    names = {s.name for s in stack.client.services.list(filters=label)}
    assert {f"{stack.name}_worker", f"{stack.name}_redis"} <= names
    assert any(v.name == f"{stack.name}_redis-data" for v in stack.client.volumes.list(filters=label))


@pytest.mark.parametrize(
    "command", [["up"], ["scale", "3"], ["logs"], ["down"], ["run", "SWEEP", "--backend", "swarm"]]
)
def test_no_docker_engine_is_one_line(command: list[str], tmp_path: Path) -> None:
    """No engine behind DOCKER_HOST: one line naming it, exit 5, whatever the command."""
    path = write_sweep(tmp_path, NAP.format(seconds=0, points=3))
    env = {
        **swarmrun_env(None, tmp_path / "home"),
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
        "SWARMRUN_STACK": "srt-absent",
    }
    r = subprocess.run(
        [sys.executable, "-m", "swarmrun", *[str(path) if a == "SWEEP" else a for a in command]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "cannot reach the Docker engine" in r.stderr and "no-engine.sock" in r.stderr


def test_missing_worker_image_is_one_line(stack: Stack, tmp_path: Path) -> None:
    options = [o if o != stack.image else f"swarmrun-worker:absent-{SESSION}" for o in stack.options()]
    r = cli(stack, "up", *options, cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    assert r.stderr.count("\n") == 1 and "is not on this Docker engine" in r.stderr
    assert f"swarmrun image build --tag swarmrun-worker:absent-{SESSION}" in r.stderr
    assert not stack.backend().exists()  # nothing half-deployed


def test_other_commands_use_the_stack_up_deployed_until_down(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in stack.env.items() if k != "SWARMRUN_STACK"}
    up = cli(stack, "up", "-r", "1", "--stack", stack.name, *stack.options(), cwd=tmp_path, env=env)
    assert up.returncode == 0, up.stderr
    path = write_sweep(tmp_path, NAP.format(seconds=0, points=20))
    run = cli(stack, "run", str(path), "-q", cwd=tmp_path, env=env)  # no --stack, no --backend
    assert run.returncode == 0, run.stderr
    assert f"stack {stack.name}" in run.stderr
    sid = run.stderr.split()[1]
    assert queue_of(stack).progress(sid).done == 20  # on the stack's Redis, not the embedded one
    status = cli(stack, "status", cwd=tmp_path, env=env)
    assert status.returncode == 0 and "1/1 running (" in status.stdout, status.stderr
    [worker] = [c.id for c in stack.worker_containers()]
    scaled = cli(stack, "run", str(path), "-w", "2", "-q", cwd=tmp_path, env=env)  # -w scales, no redeploy
    assert scaled.returncode == 0 and f"stack {stack.name}" in scaled.stderr, scaled.stderr
    assert stack.backend().replicas().desired == 2 and worker in {c.id for c in stack.worker_containers()}
    local = cli(stack, "run", str(path), "--backend", "local", "-w", "1", "-q", cwd=tmp_path, env=env)
    assert local.returncode == 0 and "stack" not in local.stderr, local.stderr
    assert "20 points, 0 already done" in local.stderr  # the embedded Redis had none of them

    # a second stack cannot take the first one's Redis port
    other = Stack(stack.client, stack.image, tmp_path / "other-home", "")
    options = [o if o != str(other.port) else str(stack.port) for o in other.options()]
    clash = cli(other, "up", *options, cwd=tmp_path)
    assert clash.returncode == 5 and f"port {stack.port} is already published" in clash.stderr, clash.stderr
    assert not other.backend().exists()

    assert cli(stack, "down", cwd=tmp_path, env=env).returncode == 0
    after = cli(stack, "status", cwd=tmp_path, env=env)  # back to the embedded Redis: the local run's copy
    assert after.returncode == 0 and "running (" not in after.stdout, after.stdout + after.stderr
