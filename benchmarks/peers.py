"""The engines users pick instead, end to end: Dask futures, dask.bag, Ray, Celery, and swarmrun.

Each engine runs as the user's script would: a fresh Python process that starts its workers
(2, one per core), hands over the same N points, and ends when every result is in hand. The clock
is the whole process, start to exit. The peers are the `bench` extra (never runtime deps); a peer
that is not installed is reported as skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.harness import ROOT, RedisServer, Row, bench_env, load_average, say

SECTION = "peers, end to end"
WORKLOADS = {"no-op": ("noop", {}), "1 ms": ("spin", {"ms": 1.0}), "100 ms": ("spin", {"ms": 100.0})}
# (quick, full) point counts. The small sizes are where start-up weighs most; 20,000 and 100,000
# no-op points are what a user runs. 100 ms points: few, so the case stays short.
SIZES = {
    "no-op": ((3_000,), (3_000, 20_000, 100_000)),
    "1 ms": ((2_000,), (10_000,)),
    "100 ms": ((20,), (200,)),
}
# Peers at a few hundred points/s would take 5 to 7 minutes at 100,000 points: not run past this.
MAX_POINTS = {"dask futures": 20_000, "celery": 20_000}

POINT = """
import sys
sys.path.insert(0, {root!r})
from benchmarks import tasks
FN, PARAMS = {fn!r}, {params!r}
def point(i):
    return tasks.call(FN, dict(PARAMS, i=i))
"""

SCRIPTS = {
    "dask futures": """
from dask.distributed import Client, LocalCluster
if __name__ == "__main__":
    with LocalCluster(n_workers={w}, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            results = client.gather(client.map(point, range({n}), pure=False))
    assert len(results) == {n}
""",
    "dask.bag (64 partitions)": """
import dask.bag as db
from dask.distributed import Client, LocalCluster
if __name__ == "__main__":
    with LocalCluster(n_workers={w}, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            results = db.from_sequence(range({n}), npartitions=64).map(point).compute()
    assert len(results) == {n}
""",
    "ray": """
import ray
if __name__ == "__main__":
    ray.init(num_cpus={w}, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(point)
    results = ray.get([remote.remote(i) for i in range({n})])
    assert len(results) == {n}
    ray.shutdown()
""",
}

CELERY_APP = """
from celery import Celery
app = Celery("benchpeer", broker={url!r}, backend={url!r})
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                worker_prefetch_multiplier=16, result_expires=3600)
task = app.task(name="point")(point)
"""

CELERY_CLIENT = """
import subprocess, sys, time
from celery import group
from benchpeer import app, task
if __name__ == "__main__":
    argv = [sys.executable, "-m", "celery", "-A", "benchpeer", "worker", "--pool", "prefork", "-c", "{w}",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        results = group(task.s(i) for i in range({n})).apply_async().get(timeout=1800)
        assert len(results) == {n}
    finally:
        worker.terminate()
        worker.wait(30)
"""

MODULES = {
    "dask futures": "distributed",
    "dask.bag (64 partitions)": "distributed",
    "ray": "ray",
    "celery": "celery",
}


def _run(script: str, cwd: Path, env: dict[str, str]) -> float:
    path = cwd / "bench_script.py"
    path.write_text(script)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-400:])
    return seconds


def _swarmrun(fn: str, params: dict[str, float], n: int, workers: int, nonce: str, tmp: Path) -> float:
    path = tmp / "sweep.yaml"
    fixed = "".join(f"  {k}: [{v}]\n" for k, v in params.items())
    path.write_text(
        f"name: bench-peers\ntask: {{call: 'benchmarks.tasks:{fn}'}}\n"
        f"params:\n{fixed}  run: ['{nonce}']\n  i: {{range: [0, {n}]}}\n"
    )
    env = bench_env(SWARMRUN_HOME=str(tmp / "home"))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "swarmrun", "run", str(path), "-w", str(workers), "-o", str(tmp / "out.csv")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-400:])
    return seconds


def run(rows: list[Row], server: RedisServer, *, quick: bool, workers: int, nonce: str) -> None:
    """Every peer and `swarmrun run` on the same points, end to end; ratios swarmrun / peer."""
    for workload, (fn, params) in WORKLOADS.items():
        for n in SIZES[workload][0 if quick else 1]:
            _run_size(rows, server, workload, fn, params, n, workers=workers, nonce=nonce)


def _run_size(
    rows: list[Row],
    server: RedisServer,
    workload: str,
    fn: str,
    params: dict[str, float],
    n: int,
    *,
    workers: int,
    nonce: str,
) -> None:
    """swarmrun and every installed peer on the same `n` points of one workload."""
    with tempfile.TemporaryDirectory(prefix="swarmrun-bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "benchpeer.py").write_text(
            POINT.format(root=str(ROOT), fn=fn, params=params)
            + CELERY_APP.format(url=server.url.replace("/0", "/1"))
        )
        say(f"peers, {workload}: swarmrun run ({n} points, load {load_average():.2f})")
        ours = Row(
            SECTION, workload, "swarmrun run", workers, n, _swarmrun(fn, params, n, workers, nonce, tmp)
        )
        rows.append(ours)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)])}
        for engine in [*SCRIPTS, "celery"]:
            if importlib.util.find_spec(MODULES[engine]) is None:
                say(f"peers: {engine} is not installed (pip install -e '.[bench]'): skipped")
                continue
            if n > MAX_POINTS.get(engine, n):
                say(f"peers, {workload}: {engine} not run at {n} points (over {MAX_POINTS[engine]})")
                continue
            say(f"peers, {workload}: {engine} ({n} points, load {load_average():.2f})")
            head = POINT.format(root=str(ROOT), fn=fn, params=params)
            body = CELERY_CLIENT if engine == "celery" else SCRIPTS[engine]
            script = (head if engine != "celery" else "") + textwrap.dedent(body).format(w=workers, n=n)
            try:
                seconds = _run(script, tmp, env)
            except RuntimeError as e:
                say(f"peers: {engine} failed: {e}")
                continue
            row = Row(SECTION, workload, engine, workers, n, seconds)
            row.ratio, row.baseline = ours.rate / row.rate, "swarmrun / this"
            if workload == "no-op" and engine in ("dask futures", "ray"):
                row.target, row.met = ">= 10x", row.ratio >= 10
            if workload == "no-op" and engine.startswith("dask.bag"):
                row.target, row.met = ">= 1x", row.ratio >= 1
            rows.append(row)
        shutil.rmtree(tmp / "home", ignore_errors=True)
