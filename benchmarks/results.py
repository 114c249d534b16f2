"""What a user waits for besides the workers: the results path, fixed costs, end to end, cost model.

- Redis bytes per stored no-op result, and export rates (CSV, JSON Lines, Parquet), on results
  recorded exactly as workers record them (`encode_record` + `SweepQueue.record`).
- Fixed costs of the commands as a user types them (subprocesses, embedded Redis default).
- `swarmrun run SWEEP -w 2 -o out.csv` end to end against the steady-state worker rate.
- The cost model: wall time of `swarmrun run` against N, with the fixed and per-point costs
  fitted (least squares), as CSV rows and a PNG.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from benchmarks.harness import ROOT, RedisServer, Row, bench_env, load_average, say
from benchmarks.local import make_sweep, time_swarmrun
from swarmrun.definition.sweep import point_key
from swarmrun.execution.export import export
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import encode_record
from swarmrun.execution.task import Outcome

SECTION = "results path"
EXPORT_RATE = 500_000  # the target for an export, rows/s


def _judge_export(row: Row) -> None:
    row.target, row.met = f">= {EXPORT_RATE:,} rows/s", row.rate >= EXPORT_RATE


# No-op points' durations as a real 10^6-point run stored them (rounded to the microsecond):
# 74 % 0.0, 26 % 1e-06, a few longer.
_DURATIONS = (0.0, 1e-06, 0.0, 0.0)


def _fill(queue: SweepQueue, size: int, nonce: str) -> tuple[object, str]:
    """A sweep of `size` no-op points whose results are recorded as 2 workers record them: a
    chunk at a time each, their records differing as real ones do (the durations vary, the
    workers alternate). Identical records would flatter the export: its columns of one value
    take a short cut, and so do Redis's Lua strings."""
    sweep = make_sweep("bench-results", {"call": "benchmarks.tasks:noop"}, size, {}, nonce)
    sid = queue.submit(sweep).sweep_id
    workers = ("bench-host.12345-ab12", "bench-host.12346-cd34")
    for number, start in enumerate(range(0, size, 4096)):
        worker = workers[number % 2]
        entries = []
        for i in range(start, min(size, start + 4096)):
            duration = _DURATIONS[i % 4] if i % 97 else (2 + i % 13) * 1e-6
            status, record = encode_record(
                Outcome("ok", duration=duration), attempt=1, worker=worker, sweep_id=sid
            )
            entries.append((i, point_key(sweep.point(i)), status, record))
        queue.record(sid, sweep.task.key, entries, seconds=0.05, worker=worker)
    return sweep, sid


def _export_formats() -> list[str]:
    """The export formats to measure: Parquet only with pyarrow installed."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        say("pyarrow is not installed: the Parquet export is not measured")
        return ["csv", "jsonl"]
    return ["csv", "jsonl", "parquet"]


def store_and_export(rows: list[Row], server: RedisServer, *, quick: bool, nonce: str) -> None:
    """Bytes per stored no-op result and export rates of 10^6 results (quick too: fewer results
    would charge each the 65,536 buckets' fixed overhead, about 6 MB), through the server's unix
    socket, as the embedded default's commands read (a socket whose buffer is a tenth of TCP's)."""
    size = 1_000_000
    connection = server.fresh_local()
    queue = SweepQueue(connection, "swarmrun")
    before = server.used_memory()
    say(f"results path: recording {size} no-op results as workers do")
    sweep, sid = _fill(queue, size, nonce)
    per_result = (server.used_memory() - before) / size
    rows.append(
        Row(
            SECTION,
            "Redis bytes per stored no-op result",
            "swarmrun",
            0,
            size,
            0.0,
            rate=per_result,
            target="<= 80 B",
            met=per_result <= 80,
            note=f"{per_result:.1f} B (INFO used_memory, done bitmap and counters included); "
            "the task's only sweep, so no key index yet",
            extra={"bytes_per_result": per_result},
        )
    )
    # A second sweep of the task (a wider one, say) has the first one's results put in the key
    # index before it starts, once (`swarmrun.execution.keyindex`): what that costs, and the memory.
    say(f"results path: a second sweep of the task indexes the {size} results of the first")
    other = make_sweep("bench-results", {"call": "benchmarks.tasks:noop"}, 10, {}, nonce + "-other")
    t0 = time.perf_counter()
    queue.submit(other)
    seconds = time.perf_counter() - t0
    indexed = (server.used_memory() - before) / size
    rows.append(
        Row(
            SECTION,
            "Redis bytes per no-op result, key index written",
            "swarmrun",
            0,
            size,
            seconds,
            rate=indexed,
            target="<= 80 B",
            met=indexed <= 80,
            note=f"{indexed:.1f} B once a second sweep of the task came; its submit indexed the "
            f"first sweep's results in {seconds:.2f} s ({size / seconds:,.0f} results/s)",
            extra={"bytes_per_result": indexed},
        )
    )
    formats = _export_formats()
    times: dict[str, list[float]] = {fmt: [] for fmt in formats}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):  # alternated, so a burst of load touches every format alike
            for fmt in formats:
                say(f"results path: export {size} rows to {fmt} (load {load_average():.2f})")
                t0 = time.perf_counter()
                written = export(queue, sweep, sid, Path(tmp) / f"out.{fmt}")  # type: ignore[arg-type]
                times[fmt].append(time.perf_counter() - t0)
    for fmt, seconds in times.items():
        row = Row(SECTION, f"export {fmt}", "swarmrun", 0, written, statistics.median(seconds))
        _judge_export(row)
        row.note = (
            "rows/s; median of 3, alternated: "
            + ", ".join(f"{t:.2f}" for t in seconds)
            + " s"
            + (
                "; the first also imports pyarrow (and pandas, which pyarrow imports when it is installed)"
                if fmt == "parquet"
                else ""
            )
        )
        rows.append(row)
    connection.flushall()
    connection.close()


@contextlib.contextmanager
def _home() -> Iterator[tuple[Path, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="swarmrun-bench-home-") as tmp:
        yield Path(tmp), bench_env(SWARMRUN_HOME=str(Path(tmp) / "home"))


def _timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "swarmrun", *argv], capture_output=True, text=True, env=env, cwd=cwd
    )
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 6):  # 6: `status` before any sweep
        raise RuntimeError(f"swarmrun {' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def _sweep_file(directory: Path, points: int, nonce: str) -> Path:
    """A sweep of `points` no-op points whose task is new (its `version` is `nonce`): the first
    sweep of its task, as a user's new sweep is. Sweeps of one task in one Redis would index each
    other's results (`swarmrun.execution.keyindex`), which a new sweep does not."""
    path = directory / f"sweep-{points}.yaml"
    path.write_text(
        f"name: bench-e2e\ntask: {{call: 'benchmarks.tasks:noop', version: '{nonce}'}}\n"
        f"params:\n  run: ['{nonce}']\n  i: {{range: [0, {points}]}}\n"
    )
    return path


def fixed_costs(rows: list[Row], *, nonce: str, repeats: int = 5) -> None:
    """`--help`, `ls`, `status` and a 1-point `run` (1 and 2 workers), each as a user types it.

    The median of `repeats`, interleaved (one of each case per round, so a burst of load on the
    shared machine touches every case alike); each run is a new 1-point sweep.
    """
    targets = {
        "swarmrun --help": 0.3,
        "swarmrun ls": 0.5,
        "swarmrun status": 0.5,
        "swarmrun run (1 point, -w 1)": 1.0,
        "swarmrun run (1 point, -w 2)": 1.0,
    }
    times: dict[str, list[float]] = {label: [] for label in targets}
    cpu: dict[str, list[float]] = {label: [] for label in targets}
    with _home() as (tmp, env):
        for k in range(repeats):
            for label in targets:
                if label.startswith("swarmrun run"):
                    workers = label.rsplit(" ", 1)[1].rstrip(")")
                    path = _sweep_file(tmp, 1, f"{nonce}-{k}-w{workers}")
                    argv = ["run", str(path), "-w", workers, "-o", str(tmp / "o.csv")]
                else:
                    argv = label.split()[1:]
                before = _children_cpu()
                times[label].append(_timed(argv, env, ROOT))
                cpu[label].append(_children_cpu() - before)
    load = load_average()
    for label, seconds in times.items():
        median = statistics.median(seconds)
        rows.append(
            Row(
                SECTION,
                "fixed cost",
                label,
                0,
                1,
                median,
                rate=median,
                target=f"< {targets[label]} s",
                met=median < targets[label],
                note=f"median of {len(seconds)}: "
                + ", ".join(f"{s:.2f}" for s in seconds)
                + f" s; CPU of the command {statistics.median(cpu[label]):.2f} s; load {load:.1f}",
            )
        )


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end(rows: list[Row], server: RedisServer, *, quick: bool, nonce: str, rounds: int = 5) -> None:
    """`swarmrun run SWEEP -w 2 -o out.csv` from start to the results file (written while the
    sweep runs: `swarmrun.execution.livexport`), against the steady rate of the same 2 workers
    on the same points: workers already running, clock from submit to the last result (on the
    benchmark's Redis). The two alternate `rounds` times (medians): the steady rate of one run
    swings by a fifth on this machine, and a ratio of two runs minutes apart swings with it."""
    for points in (50_000, 100_000) if quick else (100_000, 300_000):
        e2e: list[float] = []
        steady: list[float] = []
        for k in range(rounds):
            with _home() as (tmp, env):
                path = _sweep_file(tmp, points, f"{nonce}-e2e-{k}")
                say(f"end to end: swarmrun run of {points} no-op points (load {load_average():.2f})")
                e2e.append(_timed(["run", str(path), "-w", "2", "-o", str(tmp / "out.csv")], env, ROOT))
            noop = {"call": "benchmarks.tasks:noop"}
            sweep = make_sweep("bench-steady", noop, points, {}, f"{nonce}-st-{k}")
            say(f"end to end: steady rate of 2 running workers, {points} points (load {load_average():.2f})")
            steady.append(time_swarmrun(server, sweep, 2))
        seconds, base = statistics.median(e2e), statistics.median(steady)
        row = Row(
            SECTION, f"swarmrun run -w 2 -o out.csv, {points:,} no-op points", "swarmrun", 2, points, seconds
        )
        row.ratio, row.baseline = base / seconds, "of the steady rate of 2 running workers, same points"
        row.target, row.met = ">= 0.8", row.ratio >= 0.8
        row.note = (
            f"medians of {rounds}, alternated: run "
            + ", ".join(f"{t:.2f}" for t in e2e)
            + " s; steady "
            + ", ".join(f"{t:.2f}" for t in steady)
            + f" s ({points / base:,.0f} points/s)"
        )
        rows.append(row)


class PeakMemory:
    """Samples the embedded Redis of a running command (its unix socket under `home`) every
    `every` seconds, a new connection each time; `peak` is Redis's own `used_memory_peak`."""

    def __init__(self, home: Path, every: float = 2.0) -> None:
        self.socket = home / "redis" / "redis.sock"
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(redis.RedisError, OSError):
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
                try:
                    self.peak = max(self.peak, int(client.info("memory")["used_memory_peak"]))
                finally:
                    client.close()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cost_model(rows: list[Row], *, quick: bool, nonce: str) -> None:
    """Wall time of `swarmrun run -w 2` against N; fixed and per-point costs fitted.

    The full run goes to 10^7 points; of that run it also reports the embedded Redis's peak
    memory, and the time `swarmrun results -o` then takes to export the 10^7 rows (the embedded
    Redis is started again from its data for it, as a user's later command does).
    """
    sizes = [1, 10, 100, 1_000, 10_000, 100_000]
    if not quick:
        sizes += [1_000_000, 10_000_000]
    measured: list[tuple[int, float]] = []
    notes: dict[int, str] = {}
    with _home() as (tmp, env):
        for n in sizes:
            path = _sweep_file(tmp, n, f"{nonce}-cost-{n}")
            say(f"cost model: swarmrun run of {n} points (load {load_average():.2f})")
            argv = ["run", str(path), "-w", "2", "-o", str(tmp / "o.csv")]
            if n < 10_000_000:
                measured.append((n, _timed(argv, env, ROOT)))
                if n == (100_000 if quick else 1_000_000):
                    _exports_as_typed(rows, n, tmp, env)
                continue
            with PeakMemory(Path(env["SWARMRUN_HOME"])) as memory:
                measured.append((n, _timed(argv, env, ROOT)))
            # Each later command starts the embedded Redis again, which loads its data
            # first: `swarmrun ls` times that alone, `results -o` that and the export.
            say(f"cost model: swarmrun ls, then results -o of {n} rows (load {load_average():.2f})")
            reload_s = _timed(["ls"], env, ROOT)
            export_s = _timed(["results", "-o", str(tmp / "again.csv")], env, ROOT)
            notes[n] = (
                f"; Redis used_memory_peak {memory.peak / 1e6:,.0f} MB ({memory.peak / n:.0f} B a point);"
                f" then `swarmrun results -o` of the {n:,} rows {export_s:.1f} s, of which"
                f" {reload_s:.1f} s is Redis loading its data (`swarmrun ls` alone):"
                f" {n / max(0.001, export_s - reload_s):,.0f} rows/s of export"
            )
    fixed, per_point = _fit(measured)
    for n, seconds in measured:
        rows.append(
            Row(
                "cost model",
                f"N = {n:,}",
                "swarmrun run -w 2",
                2,
                n,
                seconds,
                note=f"fit: {fixed:.2f} s + N x {per_point * 1e6:.1f} us" + notes.get(n, ""),
                extra={"fixed_s": fixed, "per_point_us": per_point * 1e6},
            )
        )


def _exports_as_typed(rows: list[Row], n: int, tmp: Path, env: dict[str, str]) -> None:
    """`swarmrun results -o` of the newest sweep (the `n` no-op points `run` just recorded), to
    CSV, JSON Lines and Parquet, as typed: the embedded Redis starts again and loads its data
    first. Its rate is of the export alone: `swarmrun ls`, timed beside, is the
    command's start and the reload."""
    formats = _export_formats()
    say(f"results path: swarmrun ls, then results -o of {n} rows as typed (load {load_average():.2f})")
    listed = [_timed(["ls"], env, ROOT) for _ in range(3)]
    start = statistics.median(listed)
    # The first command after `run` starts Redis on the log `run` left: the one a user meets.
    rows.append(
        Row(
            SECTION,
            "fixed cost",
            f"swarmrun ls, the first command after a {n:,}-point run",
            0,
            n,
            listed[0],
            rate=listed[0],
            target="< 0.5 s",
            met=listed[0] < 0.5,
            note="then " + ", ".join(f"{s:.2f}" for s in listed[1:]) + " s, the same command again",
        )
    )
    for fmt in formats:
        seconds = statistics.median(
            _timed(["results", "-o", str(tmp / f"again.{fmt}")], env, ROOT) for _ in range(3)
        )
        row = Row(SECTION, f"swarmrun results -o out.{fmt}, as typed", "swarmrun", 0, n, seconds)
        row.rate = n / max(0.001, seconds - start)
        _judge_export(row)
        row.note = (
            f"median of 3: {seconds:.2f} s, of which {start:.2f} s is the command's start and Redis "
            f"loading its data (`swarmrun ls`, median of 3): {row.rate:,.0f} rows/s of export"
        )
        rows.append(row)


def _fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """`seconds = fixed + N * per_point` by least squares of the relative error (weights 1/t^2):
    plain least squares lets the 10^7-point run decide both numbers, and the fixed part, which
    the small runs show, comes out as noise."""
    sw = sx = sy = sxx = sxy = 0.0
    for n, t in points:
        w = 1.0 / (t * t)
        sw, sx, sy, sxx, sxy = sw + w, sx + w * n, sy + w * t, sxx + w * n * n, sxy + w * n * t
    det = sw * sxx - sx * sx
    if not det:
        return (sy / sw if sw else 0.0), 0.0
    return (sxx * sy - sx * sxy) / det, (sw * sxy - sx * sy) / det


def write_cost_png(rows: Sequence[Row], path: Path, title: str) -> str:
    model = [r for r in rows if r.section == "cost model"]
    if not model:
        return ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no cost-model PNG"
    fixed, per_point = model[0].extra["fixed_s"], model[0].extra["per_point_us"] / 1e6
    n = [r.points for r in model]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.plot(n, [r.seconds for r in model], "o-", label="measured wall time")
    ax.plot(n, [fixed + k * per_point for k in n], "--", color="grey", label="fit: fixed + N x per point")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("points N (no-op)")
    ax.set_ylabel("seconds, swarmrun run -w 2 -o out.csv")
    ax.set_title(f"fixed {fixed:.2f} s, {per_point * 1e6:.1f} us a point", fontsize=10)
    fig.suptitle(textwrap.fill(title, 120), fontsize=7)  # the machine line is wider than the plot
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"PNG written to {path}"
