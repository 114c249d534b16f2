"""`swarmrun run -o FILE` writes the results file while the sweep runs (LiveExport), on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from swarmrun.definition.sweep import Sweep, point_keys
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.export import export
from swarmrun.execution.livexport import LiveExport
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import encode_record
from swarmrun.execution.task import Outcome
from tests.conftest import Processes, read_csv, write_sweep


def _grid(tmp_path: Path, n: int, name: str = "sweep.yaml") -> Sweep:
    path = write_sweep(
        tmp_path, f'task: {{call: "fixtures.tasks:square"}}\nparams:\n  x: {{range: [0, {n}]}}\n', name
    )
    return load_sweep(path, ())


def _record(queue: SweepQueue, sweep: Sweep, sid: str, indices: range, value: Any = None) -> None:
    """Record points as workers do (through `SweepQueue.record`); `value(i)` or None."""
    keys = point_keys(sweep.param_names, [sweep.point(i) for i in indices])
    entries = []
    for i, key in zip(indices, keys, strict=True):
        outcome = Outcome("ok", value=value(i) if value else None, duration=0.5)
        status, record = encode_record(outcome, attempt=1, worker="w1", sweep_id=sid)
        entries.append((i, key, status, record))
    for start in range(0, len(entries), 4096):
        queue.record(sid, sweep.task.key, entries[start : start + 4096], seconds=0.1, worker="w1")


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_rows_are_written_as_the_index_prefix_completes(tmp_path: Path, rconn: redis.Redis, fmt: str) -> None:
    sweep = _grid(tmp_path, 20000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    live = LiveExport(queue, sweep, sid, tmp_path / f"live.{fmt}", every=0.01).start()
    _record(queue, sweep, sid, range(0, 5000))
    _wait(lambda: live.written == 5000)  # written while the sweep runs
    _record(queue, sweep, sid, range(10000, 20000))
    time.sleep(0.3)
    assert live.written == 5000  # not before the points in front of them are done: index order
    _record(queue, sweep, sid, range(5000, 10000))
    assert live.finish() == 20000
    assert export(queue, sweep, sid, tmp_path / f"after.{fmt}") == 20000
    assert (tmp_path / f"live.{fmt}").read_bytes() == (tmp_path / f"after.{fmt}").read_bytes()


def test_new_value_columns_rewrite_the_csv_and_unfinished_sweeps_keep_what_is_done(
    tmp_path: Path, rconn: redis.Redis
) -> None:
    sweep = _grid(tmp_path, 20000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    live = LiveExport(queue, sweep, sid, tmp_path / "live.csv", every=0.01).start()
    _record(queue, sweep, sid, range(0, 9000), lambda i: {"a": i})
    _wait(lambda: live.written == 9000)
    _record(queue, sweep, sid, range(9000, 15000), lambda i: {"a": i, "b": -i})  # a column more
    _record(queue, sweep, sid, range(16000, 17000), lambda i: {"a": i})  # 15000..15999 never done
    assert live.finish() == 16000
    rows = read_csv(tmp_path / "live.csv")
    assert list(rows[0])[3:5] == ["a", "b"] and (rows[9500]["b"], rows[100]["b"]) == ("-9500", "")
    assert [int(r["index"]) for r in rows] == [*range(15000), *range(16000, 17000)]
    export(queue, sweep, sid, tmp_path / "after.csv")
    assert (tmp_path / "live.csv").read_bytes() == (tmp_path / "after.csv").read_bytes()


def test_a_resumed_run_writes_every_point_once(procs: Processes, tmp_path: Path) -> None:
    small = write_sweep(tmp_path, 'task: {call: "fixtures.tasks:square"}\nparams:\n  x: {range: [0, 10]}\n')
    wide = write_sweep(
        tmp_path, 'task: {call: "fixtures.tasks:square"}\nparams:\n  x: {range: [0, 3000]}\n', "w.yaml"
    )
    assert procs.cli("run", str(small), "-w", "1", "-q", "-o", str(tmp_path / "a.csv")).returncode == 0
    r = procs.cli("run", str(wide), "-w", "2", "-q", "-o", str(tmp_path / "b.csv"))
    assert r.returncode == 0, r.stderr
    rows = read_csv(tmp_path / "b.csv")
    assert [int(row["index"]) for row in rows] == list(range(3000))
    assert [row["cached"] for row in rows[:11]] == ["True"] * 10 + ["False"]
    assert {int(row["value"]) for row in rows} == {x * x for x in range(3000)}
    again = procs.cli("run", str(wide), "-w", "1", "-q", "-o", str(tmp_path / "c.jsonl"))  # all done: export
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 3000
