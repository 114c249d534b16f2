"""Local benchmarks (one machine, same worker count for every engine): call points, command points,
and submitting a sweep of a million points.

Every engine gets warm workers before the clock starts (processes started and registered, a Pool
created); the clock runs from handing the work over (submit / enqueue / map / launch) until the
last result is stored.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rq import Queue, Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from benchmarks import tasks
from benchmarks.harness import ROOT, RedisServer, Row, bench_env, load_average, processes, say, wait_for
from swarmrun.definition.sweep import Sweep
from swarmrun.definition.sweepfile import parse_sweep
from swarmrun.execution.queue import SweepQueue

RQ = str(Path(sys.executable).parent / "rq")

# Points per (workload, engine): sized for roughly 10 s (full) / 2-3 s (quick) of work at the
# rates seen on a 2-core VM. A run's size only changes how long it takes, not the rate.
SIZES: dict[str, dict[str, tuple[int, int]]] = {  # workload -> engine -> (quick, full)
    "no-op": {
        "swarmrun": (50_000, 300_000),
        "rq-fork": (300, 2_000),
        "rq-simple": (1_000, 5_000),
        "mp-pool": (200_000, 1_000_000),
    },
    "1 ms": {
        "swarmrun": (3_000, 20_000),
        "rq-fork": (300, 2_000),
        "rq-simple": (1_000, 5_000),
        "mp-pool": (3_000, 20_000),
    },
    "100 ms": {"swarmrun": (40, 200), "rq-fork": (40, 200), "rq-simple": (40, 200), "mp-pool": (40, 200)},
}
COMMAND_SIZES: dict[str, tuple[int, int]] = {"no-op": (400, 3_000), "1 ms": (400, 3_000), "100 ms": (40, 200)}
CALLS = {"no-op": ("noop", {}), "1 ms": ("spin", {"ms": 1.0}), "100 ms": ("spin", {"ms": 100.0})}
COMMANDS = {"no-op": ["true"], "1 ms": ["sleep", "0.001"], "100 ms": ["sleep", "0.1"]}


def make_sweep(name: str, task: dict[str, Any], points: int, fixed: dict[str, Any], nonce: str) -> Sweep:
    """A sweep of `points` points; `nonce` keeps its points apart from every earlier run's results."""
    params: dict[str, Any] = {key: [value] for key, value in fixed.items()}
    params["run"] = [nonce]
    params["i"] = {"range": [0, points]}
    return parse_sweep({"name": name, "task": task, "params": params}, base_dir=ROOT)


# --- engines ---------------------------------------------------------------------------------------
def time_swarmrun(server: RedisServer, sweep: Sweep, workers: int) -> float:
    """`swarmrun worker` processes; the clock runs from submit until every point has its result."""
    connection = server.fresh()
    queue = SweepQueue(connection, "swarmrun")
    with processes() as procs:
        procs.start(
            [sys.executable, "-m", "swarmrun", "worker"], bench_env(SWARMRUN_REDIS_URL=server.url), workers
        )
        wait_for(lambda: queue.live_workers() >= workers, 60, "swarmrun workers")
        t0 = time.perf_counter()
        sid = queue.submit(sweep).sweep_id
        t1 = wait_for(lambda: queue.progress(sid).done >= sweep.size, 1200, "swarmrun sweep", interval=0.01)
    p = queue.progress(sid)
    if p.ok != sweep.size:
        raise RuntimeError(f"swarmrun: {p.ok} of {sweep.size} points ok ({p.error} errors)")
    return t1 - t0


def time_rq(
    server: RedisServer, fn: str, fixed: dict[str, Any], points: int, workers: int, worker_class: str
) -> float:
    """Raw RQ, one job per point (its default pickle serializer), enqueued with `enqueue_many`."""
    connection = server.fresh()
    queue = Queue("bench", connection=connection)
    env = bench_env()
    with processes() as procs:
        procs.start(
            [
                RQ,
                "worker",
                "--url",
                server.url,
                "--worker-class",
                worker_class,
                "--logging_level",
                "WARNING",
                "bench",
            ],
            env,
            workers,
        )
        wait_for(lambda: Worker.count(queue=queue) >= workers, 60, "rq workers")
        func = getattr(tasks, fn)
        t0 = time.perf_counter()
        for start in range(0, points, 10_000):
            queue.enqueue_many(
                [
                    Queue.prepare_data(func, kwargs={**fixed, "i": i}, result_ttl=3600)
                    for i in range(start, min(points, start + 10_000))
                ]
            )
        finished = FinishedJobRegistry(queue=queue)
        failed = FailedJobRegistry(queue=queue)
        t1 = wait_for(lambda: finished.count + failed.count >= points, 1200, "rq jobs", interval=0.01)
        if failed.count:
            raise RuntimeError(f"rq {worker_class}: {failed.count} jobs failed")
    return t1 - t0


def _pool_point(item: tuple[str, dict[str, Any]]) -> object:
    return tasks.call(*item)


def time_pool(fn: str, fixed: dict[str, Any], points: int, workers: int) -> float:
    """multiprocessing.Pool.map (default chunksize), the pool created before the clock starts."""
    with get_context("fork").Pool(workers) as pool:
        pool.map(_pool_point, [("noop", {})] * workers)  # warm
        t0 = time.perf_counter()
        out = pool.map(_pool_point, [(fn, {**fixed, "i": i}) for i in range(points)])
        seconds = time.perf_counter() - t0
    assert len(out) == points
    return seconds


def time_parallel(argv: Sequence[str], points: int, workers: int) -> float:
    """GNU parallel running `argv` once per input line (`-N0`: the line is not appended)."""
    lines = "".join(f"{i}\n" for i in range(points))
    t0 = time.perf_counter()
    done = subprocess.run(
        ["parallel", "--will-cite", "-j", str(workers), "-N0", *argv],
        input=lines,
        text=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"GNU parallel failed: {done.stderr.strip()[-300:]}")
    return seconds


# --- sections ---------------------------------------------------------------------------------------
def call_points(rows: list[Row], server: RedisServer, *, quick: bool, workers: int, nonce: str) -> None:
    """Call points (no-op, 1 ms and 100 ms of CPU): swarmrun vs raw RQ and multiprocessing.Pool."""
    for workload, (fn, fixed) in CALLS.items():
        sizes = {engine: pair[0 if quick else 1] for engine, pair in SIZES[workload].items()}
        results: dict[str, Row] = {}
        say(f"call points, {workload}: swarmrun ({sizes['swarmrun']} points, load {load_average():.2f})")
        sweep = make_sweep(f"bench-{fn}", {"call": f"benchmarks.tasks:{fn}"}, sizes["swarmrun"], fixed, nonce)
        results["swarmrun"] = Row(
            "call points", workload, "swarmrun", workers, sweep.size, time_swarmrun(server, sweep, workers)
        )
        for engine, cls in (("rq-fork", "rq.worker.Worker"), ("rq-simple", "rq.worker.SimpleWorker")):
            say(f"call points, {workload}: raw RQ {cls} ({sizes[engine]} jobs)")
            results[engine] = Row(
                "call points",
                workload,
                engine,
                workers,
                sizes[engine],
                time_rq(server, fn, fixed, sizes[engine], workers, cls),
            )
        say(f"call points, {workload}: multiprocessing.Pool ({sizes['mp-pool']} points)")
        results["mp-pool"] = Row(
            "call points",
            workload,
            "mp-pool",
            workers,
            sizes["mp-pool"],
            time_pool(fn, fixed, sizes["mp-pool"], workers),
        )
        ours = results["swarmrun"]
        for engine, row in results.items():
            if engine != "swarmrun":
                row.ratio, row.baseline = ours.rate / row.rate, "swarmrun / this"
        fork, pool = results["rq-fork"], results["mp-pool"]
        if workload == "no-op":
            fork.target, fork.met = ">= 30x", (fork.ratio or 0) >= 30
            ours.target, ours.met = ">= 10,000 points/s", ours.rate >= 10_000
        pool.target, pool.met = ">= 0.5 (within 2x)", (pool.ratio or 0) >= 0.5
        rows.extend(results.values())


def command_points(rows: list[Row], server: RedisServer, *, quick: bool, workers: int, nonce: str) -> None:
    """Command points (`true`, `sleep 0.001`, `sleep 0.1`): swarmrun vs GNU parallel."""
    if shutil.which("parallel") is None:
        say("GNU parallel is not installed (apt-get install parallel): command baselines skipped")
    for workload, argv in COMMANDS.items():
        points = COMMAND_SIZES[workload][0 if quick else 1]
        say(f"command points, {workload} ({' '.join(argv)}): swarmrun ({points} points)")
        sweep = make_sweep("bench-command", {"command": argv}, points, {}, nonce)
        seconds = time_swarmrun(server, sweep, workers)
        ours = Row("command points", workload, "swarmrun", workers, points, seconds, note=" ".join(argv))
        rows.append(ours)
        if shutil.which("parallel") is None:
            continue
        say(f"command points, {workload}: GNU parallel ({points} jobs)")
        theirs = Row(
            "command points",
            workload,
            "gnu-parallel",
            workers,
            points,
            time_parallel(argv, points, workers),
            note=" ".join(argv),
        )
        theirs.ratio, theirs.baseline = ours.rate / theirs.rate, "swarmrun / this"
        rows.append(theirs)


def submit_million(
    rows: list[Row], server: RedisServer, *, quick: bool, nonce: str, run_it: bool, workers: int
) -> None:
    """Submit a 1,000,000-point sweep (library call, and the `swarmrun submit` command) vs raw RQ."""
    size = 1_000_000
    sweep = make_sweep("bench-million", {"call": "benchmarks.tasks:noop"}, size, {}, nonce)
    connection = server.fresh()
    before = server.used_memory()
    t0 = time.perf_counter()
    SweepQueue(connection, "swarmrun").submit(sweep)
    library = time.perf_counter() - t0
    memory = server.used_memory() - before
    say(f"submit 1e6 (library): {library:.3f} s, {memory / 1e3:.1f} kB")

    connection = server.fresh()
    path = Path("/tmp") / f"swarmrun-bench-million-{nonce}.yaml"
    path.write_text(
        f"name: bench-million\ntask: {{call: 'benchmarks.tasks:noop'}}\n"
        f"params:\n  run: ['{nonce}']\n  i: {{range: [0, {size}]}}\n"
    )
    before = server.used_memory()
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "swarmrun", "submit", str(path)],
        capture_output=True,
        text=True,
        env=bench_env(SWARMRUN_REDIS_URL=server.url),
        cwd=ROOT,
    )
    command = time.perf_counter() - t0
    cli_memory = server.used_memory() - before
    path.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"swarmrun submit failed: {done.stderr.strip()}")
    rows.append(
        Row(
            "submit 1e6",
            "1,000,000 points",
            "swarmrun submit (CLI)",
            0,
            size,
            command,
            target="< 5 s, < 50 MB",
            met=command < 5 and cli_memory < 50e6,
            note=f"Redis +{cli_memory / 1e3:.1f} kB (INFO used_memory); library call "
            f"{library * 1000:.1f} ms, +{memory / 1e3:.1f} kB",
            extra={"redis_mb": cli_memory / 1e6, "library_s": library},
        )
    )

    jobs = 100_000 if quick else size
    connection = server.fresh()
    queue = Queue("bench", connection=connection)
    before = server.used_memory()
    say(f"raw RQ: enqueue_many of {jobs} jobs")
    t0 = time.perf_counter()
    for start in range(0, jobs, 10_000):
        queue.enqueue_many(
            [
                Queue.prepare_data(tasks.noop, kwargs={"i": i}, result_ttl=3600)
                for i in range(start, min(jobs, start + 10_000))
            ]
        )
    seconds = time.perf_counter() - t0
    rq_memory = server.used_memory() - before
    rows.append(
        Row(
            "submit 1e6",
            f"{jobs:,} jobs",
            "rq enqueue_many",
            0,
            jobs,
            seconds,
            ratio=seconds / command,
            baseline="its time / swarmrun submit's",
            note=f"Redis +{rq_memory / 1e6:.1f} MB",
            extra={"redis_mb": rq_memory / 1e6},
        )
    )
    connection.flushall()

    if run_it:
        sweep = make_sweep("bench-million-run", {"call": "benchmarks.tasks:noop"}, size, {}, nonce)
        say(f"running the 1e6-point no-op sweep on {workers} workers")
        before = server.used_memory()
        seconds = time_swarmrun(server, sweep, workers)
        rows.append(
            Row(
                "submit 1e6",
                "1,000,000 no-op points, run",
                "swarmrun",
                workers,
                size,
                seconds,
                note=f"Redis holding 1e6 results: +{(server.used_memory() - before) / 1e6:.0f} MB",
            )
        )
