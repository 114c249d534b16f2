"""Sweeps on a real Kubernetes cluster: up/status/logs/down, killed pods, a killed Redis, bad images."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from swarmrun.backends.kubernetes import manifests as km
from swarmrun.backends.kubernetes.backend import spec_hash
from swarmrun.execution.queue import SweepQueue
from tests.cluster.chaos import Recovery
from tests.cluster.conftest import report
from tests.conftest import read_csv, wait_until, write_sweep
from tests.kube.conftest import KUBECONFIG, SESSION, KubeStack, kubelet

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(420)]

NAP = """
name: kube-nap
task: {{call: "fixtures.tasks:nap"}}
params:
  seconds: [{seconds}]
  i: {{range: [0, {points}]}}
"""


def test_up_status_logs_down(kstack: KubeStack, tmp_path: Path) -> None:
    kstack.add_volume()
    first = kstack.cli("up", "-r", "2", *kstack.options(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "workers 2/2 running (localhost: 2)" in first.stdout
    assert "emptyDir" not in first.stderr  # the claim bound to the test volume
    worker = kstack.kube.apps.read_namespaced_deployment("swarmrun-worker", kstack.namespace)
    generation = worker.metadata.generation
    again = kstack.cli("up", *kstack.options(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    worker = kstack.kube.apps.read_namespaced_deployment("swarmrun-worker", kstack.namespace)
    assert worker.metadata.generation == generation  # idempotent: nothing changed
    assert worker.spec.template.spec.termination_grace_period_seconds == 120
    # The dry run writes what `up` applied (the Secret aside).
    dry = kstack.cli("up", "--dry-run", "-o", str(tmp_path / "m"), *kstack.options(), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    written = [o for f in sorted((tmp_path / "m").glob("*.yaml")) for o in yaml.safe_load_all(f.read_text())]
    live = kstack.kube.api.sanitize_for_serialization(worker)
    rendered = next(o for o in written if o["metadata"]["name"] == "swarmrun-worker")
    # `up` applied exactly what the dry run wrote: the annotation is the hash of the rendered object.
    assert live["metadata"]["annotations"][km.SPEC_ANNOTATION] == spec_hash(rendered)
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == rendered["spec"]["template"]["spec"]["containers"][0]["env"]

    path = write_sweep(tmp_path, NAP.format(seconds=0.05, points=60))
    out = tmp_path / "out.csv"
    run = kstack.cli("run", str(path), "-o", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = read_csv(out)
    assert sorted(int(r["i"]) for r in rows) == list(range(60))
    status = kstack.cli("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "60 done (60 ok" in status.stdout and "workers    2/2 running (localhost: 2)" in status.stdout
    logs = kstack.cli("logs", "--tail", "5", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert all(
        line.startswith("swarmrun-worker-") and "@localhost | " in line for line in logs.stdout.splitlines()
    )
    scaled = kstack.cli("scale", "3", cwd=tmp_path)
    assert scaled.returncode == 0 and "workers 3/3 running (localhost: 3)" in scaled.stdout, scaled.stderr

    down = kstack.cli("down", "--volumes", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    ns = kstack.namespace
    assert kstack.kube.apps.list_namespaced_deployment(ns).items == []
    assert [s for s in kstack.kube.core.list_namespaced_secret(ns).items if s.type == "Opaque"] == []
    assert kstack.kube.core.list_namespaced_service(ns).items == []
    assert kstack.kube.core.list_namespaced_persistent_volume_claim(ns).items == []


def test_emptydir_without_a_volume_says_what_is_at_risk(kstack: KubeStack, tmp_path: Path) -> None:
    up = kstack.cli("up", "-r", "1", *kstack.options(), cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "emptyDir" in up.stderr and "lost when the Redis pod is deleted" in up.stderr


def _manager(
    kstack: KubeStack, tmp_path: Path, points: int, seconds: float = 0.1
) -> tuple[subprocess.Popen[str], Path]:
    """`swarmrun run` of a nap sweep on the stack, as a child process; (process, results file)."""
    path = write_sweep(tmp_path, NAP.format(seconds=seconds, points=points))
    out = tmp_path / "out.csv"
    manager = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "run", str(path), "-o", str(out), "-q"],
        env=kstack.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return manager, out


def _finish(
    manager: subprocess.Popen[str], out: Path, queue: SweepQueue, sid: str, recovery: Recovery, what: str
) -> int:
    """Wait for the manager; every point exactly once; print the reliability line; the duplicates."""
    try:
        _, stderr = manager.communicate(timeout=300)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 0, stderr
    rows = read_csv(out)
    points = queue.progress(sid).size
    assert sorted(int(r["i"]) for r in rows) == list(range(points)), "a point was lost or recorded twice"
    assert {r["status"] for r in rows} == {"ok"}
    p = queue.progress(sid)
    assert (p.done, p.ok) == (points, points)
    assert p.executions == points + p.duplicates
    line = f"{what}: lost=0, duplicates executed={p.duplicates}, time to recover={recovery.worst:.1f}s"
    print(line)
    report(line)
    return p.duplicates


def _chaos(kstack: KubeStack, tmp_path: Path, component: str, every: float, points: int, kills: int) -> None:
    """Run a sweep while deleting `component` pods every `every` seconds; every point exactly once."""
    kstack.add_volume()
    assert kstack.cli("up", "-r", "3", *kstack.options(), cwd=tmp_path).returncode == 0
    manager, out = _manager(kstack, tmp_path, points)
    deleted: list[str] = []
    try:
        with kstack.queue() as queue:
            sid = wait_until(lambda: next(iter(queue.sweep_ids()), None), 90, message="submitted")
            wait_until(lambda: queue.progress(sid).done >= 20, 90, message="first results")
            with Recovery(queue, sid) as recovery:
                while len(deleted) < kills and manager.poll() is None:
                    pods = kstack.running_pods(component)
                    if pods:
                        victim = pods[0].metadata.name
                        recovery.disrupt(f"deleted {victim}")
                        kstack.kube.core.delete_namespaced_pod(victim, kstack.namespace)
                        deleted.append(victim)
                    time.sleep(every)
                assert len(deleted) >= min(kills, 1), deleted
                _finish(
                    manager,
                    out,
                    queue,
                    sid,
                    recovery,
                    f"deleted {len(deleted)} {component} pods ({points} points)",
                )
    finally:
        if manager.poll() is None:
            manager.kill()


def test_deleting_worker_pods_mid_sweep_loses_nothing(kstack: KubeStack, tmp_path: Path) -> None:
    _chaos(kstack, tmp_path, "worker", every=4, points=400, kills=4)


def test_deleting_the_redis_pod_loses_nothing(kstack: KubeStack, tmp_path: Path) -> None:
    _chaos(kstack, tmp_path, "redis", every=10, points=300, kills=1)


def test_stopping_the_kubelet_mid_sweep_loses_nothing(kstack: KubeStack, tmp_path: Path) -> None:
    """The kubelet stopped (`.ci/kubernetes/kubelet.sh stop`) until the node is NotReady, then
    started again: the pods' containers keep running meanwhile (workers go on recording through
    their open Redis connections; the manager's port-forward, which goes through the kubelet, is
    down), the kubelet adopts them when it returns, and every point ends with exactly one result."""
    kstack.add_volume()
    assert kstack.cli("up", "-r", "3", *kstack.options(), cwd=tmp_path).returncode == 0
    before = {p.metadata.name for p in kstack.running_pods("worker")}
    manager, out = _manager(kstack, tmp_path, points=3000)
    stopped = False
    try:
        with kstack.queue() as queue:
            sid = wait_until(lambda: next(iter(queue.sweep_ids()), None), 90, message="submitted")
            wait_until(lambda: queue.progress(sid).done >= 300, 120, message="10 % done")
            with Recovery(queue, sid) as recovery:
                recovery.disrupt("kubelet stopped")
                done_key = f"swarmrun:sweep:{sid}:done"
                at_stop = int(kstack.redis_cli("BITCOUNT", done_key))
                t0 = time.monotonic()
                kubelet("stop")
                stopped = True
                wait_until(lambda: not kstack.kube.node_ready(), 150, interval=1, message="node NotReady")
                not_ready = time.monotonic() - t0
                at_not_ready = int(kstack.redis_cli("BITCOUNT", done_key))
                kubelet("start")
                stopped = False
                wait_until(kstack.kube.node_ready, 120, interval=0.5, message="node Ready again")
                down = time.monotonic() - t0
                duplicates = _finish(
                    manager,
                    out,
                    queue,
                    sid,
                    recovery,
                    f"kubelet stopped at 10 % until the node was NotReady ({not_ready:.0f} s), then started"
                    f" (Ready again {down:.0f} s after the stop); points recorded while it was down:"
                    f" {at_not_ready - at_stop}",
                )
        after = kstack.pods("worker")
        # The kubelet adopted the running pods: the same pods, their containers not restarted.
        assert {p.metadata.name for p in after} == before
        restarts = sum(c.restart_count for p in after for c in (p.status.container_statuses or []))
        print(f"after the kubelet returned: {len(after)} worker pods, {restarts} restarts, {duplicates} dup")
        assert at_not_ready > at_stop, "the workers stopped recording while the kubelet was down"
    finally:
        if stopped:
            kubelet("start")
        if manager.poll() is None:
            manager.kill()


def test_missing_node_image_is_one_line_within_seconds(kstack: KubeStack, tmp_path: Path) -> None:
    options = kstack.options()
    options[options.index(kstack.image)] = f"swarmrun-worker:absent-{SESSION}"
    started = time.monotonic()
    r = kstack.cli("up", "-r", "1", *options, cwd=tmp_path, timeout=120)
    took = time.monotonic() - started
    assert r.returncode == 6, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "ErrImageNeverPull" in errors[0], r.stderr
    assert took < 45, took
    print(f"missing node-local image reported in {took:.1f} s")


def test_cluster_faults_are_one_line(kstack: KubeStack, tmp_path: Path) -> None:
    wrong_ctx = kstack.cli("status", "--context", "nope", cwd=tmp_path, timeout=60)
    assert wrong_ctx.returncode == 7 and "no context 'nope'" in wrong_ctx.stderr, wrong_ctx.stderr
    missing_ns = kstack.cli("up", "--namespace", "no-such-ns", *kstack.options(), cwd=tmp_path, timeout=60)
    assert missing_ns.returncode == 7 and "namespace 'no-such-ns' does not exist" in missing_ns.stderr
    # An authenticated user with no RBAC rights.
    config = yaml.safe_load(KUBECONFIG.read_text())
    config["users"][0]["user"]["token"] = "k8sr-nobody-token"
    nobody = tmp_path / "nobody.kubeconfig"
    nobody.write_text(yaml.safe_dump(config))
    refused = kstack.cli("up", *kstack.options(), cwd=tmp_path, env={**kstack.env, "KUBECONFIG": str(nobody)})
    assert (
        refused.returncode == 7 and "Kubernetes refused" in refused.stderr and "forbidden" in refused.stderr
    )
    for r in (wrong_ctx, missing_ns, refused):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_auto_picks_kubernetes_when_no_swarm_manager_answers(kstack: KubeStack, tmp_path: Path) -> None:
    kstack.add_volume()
    assert kstack.cli("up", "-r", "2", *kstack.options(), cwd=tmp_path).returncode == 0
    path = write_sweep(tmp_path, NAP.format(seconds=0.01, points=20))
    env = {**kstack.env, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    r = kstack.cli(
        "run", str(path), "--backend", "auto", "-o", str(tmp_path / "o.csv"), cwd=tmp_path, env=env
    )
    assert r.returncode == 0, r.stderr
    assert "backend: kubernetes (no swarm manager" in r.stderr and "a Kubernetes cluster answers" in r.stderr
    assert len(read_csv(tmp_path / "o.csv")) == 20


def test_logs_follow_streams_prefixed_lines(kstack: KubeStack, tmp_path: Path) -> None:
    kstack.add_volume()
    assert kstack.cli("up", "-r", "1", *kstack.options(), cwd=tmp_path).returncode == 0
    follow = subprocess.Popen(
        [sys.executable, "-m", "swarmrun", "logs", "--follow", "--tail", "5"],
        env=kstack.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        line = follow.stdout.readline()  # the worker's start-up lines, then it keeps streaming
        assert line.startswith("swarmrun-worker-") and "@localhost | " in line, line
        time.sleep(2)
        assert follow.poll() is None  # still following
    finally:
        follow.kill()
        follow.communicate(timeout=30)
