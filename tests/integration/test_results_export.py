"""Export of results (CSV, JSON Lines, Parquet) and the compact result store, on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from swarmrun.definition.sweep import point_key
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.connection import checkout
from swarmrun.execution.export import export
from swarmrun.execution.keys import Keys
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import encode_record, iter_results
from swarmrun.execution.task import Outcome
from tests.conftest import Processes, read_csv, write_sweep

SPECIAL = """
def special(x):
    return {"x": x, "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "ok": 1.5}
"""


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_jsonl_writes_null_for_nan_and_infinity(procs: Processes, tmp_path: Path) -> None:
    (tmp_path / "specialmod.py").write_text(SPECIAL)
    path = write_sweep(tmp_path, 'task: {call: "specialmod:special"}\nparams:\n  x: [1, 2, 3]\n')
    out = tmp_path / "out.jsonl"
    r = procs.cli("run", str(path), "-w", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    lines = [_strict(line) for line in out.read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2]  # type: ignore[index]
    for line in lines:
        assert line["value"] == {"x": line["params"]["x"], "nan": None, "inf": None, "ninf": None, "ok": 1.5}  # type: ignore[index]


def _grid(tmp_path: Path, n: int, name: str = "sweep.yaml") -> Path:
    return write_sweep(
        tmp_path, f'task: {{call: "fixtures.tasks:square"}}\nparams:\n  x: {{range: [0, {n}]}}\n', name
    )


def _fill(queue: SweepQueue, sweep, values, *, worker: str = "w1") -> str:  # type: ignore[no-untyped-def]
    """Record `values[i]` as point i's ok result, as workers do (through `SweepQueue.record`)."""
    sid = queue.submit(sweep).sweep_id
    entries = []
    for i, value in enumerate(values):
        status, record = encode_record(
            Outcome("ok", value=value, duration=0.5), attempt=1, worker=worker, sweep_id=sid
        )
        entries.append((i, point_key(sweep.point(i)), status, record))
    for start in range(0, len(entries), 4096):
        queue.record(sid, sweep.task.key, entries[start : start + 4096], seconds=0.1, worker=worker)
    return sid


def test_csv_jsonl_parquet_agree(tmp_path: Path, rconn: redis.Redis) -> None:
    pytest.importorskip("pyarrow")  # in the test extra: only a bare checkout skips
    import pyarrow.parquet as pq

    sweep = load_sweep(_grid(tmp_path, 20000), ())
    queue = SweepQueue(rconn, "swarmrun")
    # dict values whose keys change after the first read block: the export must find every column
    values = [{"a": i} if i < 10000 else {"a": i, "b": -i} for i in range(20000)]
    values[3] = None
    sid = _fill(queue, sweep, values)
    assert export(queue, sweep, sid, tmp_path / "o.csv") == 20000
    assert export(queue, sweep, sid, tmp_path / "o.jsonl") == 20000
    assert export(queue, sweep, sid, tmp_path / "o.parquet") == 20000
    rows = read_csv(tmp_path / "o.csv")
    assert list(rows[0]) == [
        "index",
        "x",
        "status",
        "a",
        "b",
        "error",
        "duration",
        "worker",
        "attempt",
        "cached",
    ]
    assert [int(r["index"]) for r in rows] == list(range(20000))
    assert (rows[5]["a"], rows[5]["b"], rows[15000]["a"], rows[15000]["b"]) == ("5", "", "15000", "-15000")
    assert rows[3]["a"] == "" and rows[3]["status"] == "ok"
    assert {(r["worker"], r["attempt"], r["cached"]) for r in rows} == {("w1", "1", "False")}
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert lines[15000] == {
        "index": 15000,
        "params": {"x": 15000},
        "status": "ok",
        "value": {"a": 15000, "b": -15000},
        "error": None,
        "duration": 0.5,
        "worker": "w1",
        "attempt": 1,
        "cached": False,
    }
    table = pq.read_table(tmp_path / "o.parquet").to_pylist()
    assert table[15000]["b"] == -15000 and table[5]["b"] is None and len(table) == 20000
    assert [r.index for r in iter_results(queue, sweep, sid)] == list(range(20000))


def test_results_of_another_sweep_of_the_task_are_cached(tmp_path: Path, rconn: redis.Redis) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    first = load_sweep(_grid(tmp_path, 10), ())
    _fill(queue, first, list(range(10)), worker="old")
    second = load_sweep(_grid(tmp_path, 12, "wider.yaml"), ())
    keys = [point_key(second.point(i)) for i in range(12)]
    assert queue.cached(second.task.key, keys) == [True] * 10 + [False] * 2
    sid = queue.submit(second).sweep_id
    entries = [(i, keys[i], "cached", "") for i in range(10)]
    status, record = encode_record(Outcome("ok", value=11), attempt=1, worker="new", sweep_id=sid)
    queue.record(sid, second.task.key, [*entries, (11, keys[11], status, record)], seconds=0.1, worker="new")
    got = {r.index: (r.value, r.worker, r.cached) for r in iter_results(queue, second, sid)}
    assert got == {**{i: (i, "old", True) for i in range(10)}, 11: (11, "new", False)}


def test_format1_records_are_still_read_and_count_as_cached(tmp_path: Path, rconn: redis.Redis) -> None:
    """A result store written before the compact format (one hash, JSON objects) keeps working."""
    sweep = load_sweep(_grid(tmp_path, 5), ())
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    old = {"s": "ok", "d": 0.25, "w": "oldhost.1-ab", "a": 2, "sw": "0123456789abcdef", "t": 1.5, "v": 9}
    for i in range(3):
        rconn.hset(Keys.store(sweep.task.key), point_key(sweep.point(i)), json.dumps({**old, "v": i * i}))
    keys = [point_key(sweep.point(i)) for i in range(5)]
    assert queue.cached(sweep.task.key, keys) == [True, True, True, False, False]
    queue.record(sid, sweep.task.key, [(i, keys[i], "cached", "") for i in range(3)], seconds=0.0)
    export(queue, sweep, sid, tmp_path / "o.csv")
    rows = read_csv(tmp_path / "o.csv")
    assert [(r["index"], r["value"], r["worker"], r["attempt"], r["cached"]) for r in rows] == [
        (str(i), str(i * i), "oldhost.1-ab", "2", "True") for i in range(3)
    ]


class _Logged(redis.Connection):
    """A real connection that notes each request it sends (the block reads: `EVALSHA`) and
    each reply it reads, with which connection did."""

    log: list[tuple[int, str]] = []

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        packed = command if isinstance(command, bytes) else b"".join(command)
        _Logged.log.append((id(self), "send" if b"EVALSHA" in packed else "other"))
        sends = sum(e == "send" for _, e in _Logged.log)
        if b"EVALSHA" in packed and _Logged.fail_send_at == sends:
            _Logged.fail_send_at = None  # once
            self.disconnect()
            raise redis.ConnectionError("injected: the connection broke")
        return super().send_packed_command(command, check_health)

    def read_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _Logged.log.append((id(self), "read"))
        if _Logged.fail_at is not None and sum(e == "read" for _, e in _Logged.log) == _Logged.fail_at:
            _Logged.fail_at = None  # once
            self.disconnect()
            raise redis.ConnectionError("injected: the connection broke")
        return super().read_response(*args, **kwargs)

    fail_at: int | None = None  # the read (counted from 1 since the log was cleared) that fails
    fail_send_at: int | None = None  # the block request (counted so) that fails


def _logged_queue(tmp_path: Path, redis_url: str) -> tuple[SweepQueue, object, str]:
    """A sweep of 3 blocks of 8,192 recorded points, on a queue whose connections are `_Logged`
    (two of them connected already, so the log holds only what reading does)."""
    sweep = load_sweep(_grid(tmp_path, 3 * 8192), ())
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=_Logged)
    queue = SweepQueue(redis.Redis(connection_pool=pool), "swarmrun")
    sid = _fill(queue, sweep, list(range(sweep.size)))
    warm = [checkout(pool), checkout(pool)]
    for conn in warm:
        conn.connect()
        pool.release(conn)
    _Logged.log.clear()
    _Logged.fail_at = _Logged.fail_send_at = None
    return queue, sweep, sid


RANGES = [(0, 8192), (8192, 16384), (16384, 3 * 8192)]


def test_an_export_asks_for_the_next_block_once_this_ones_reply_is_read_whole(
    tmp_path: Path, redis_url: str
) -> None:
    """Redis reads the next block while the caller writes this one, so the next block's request
    goes out before this block is handed over, but only after this block's reply was read whole.
    Asked for earlier, Redis runs the next block's script before it writes the rest of a reply
    larger than the socket's buffer (a unix socket's, the embedded default's, holds about 200 kB;
    8,192 no-op records are 250 kB): the caller then waited the whole script on every block."""
    queue, sweep, sid = _logged_queue(tmp_path, redis_url)
    for mask, text in queue.read_ranges(sid, sweep.task.key, RANGES):  # type: ignore[attr-defined]
        assert text.count("],[") == 8191 and mask == b"\xff" * 1024
        _Logged.log.append((0, "handed"))
    reader = next(c for c, e in _Logged.log if e == "send")
    log = [e for c, e in _Logged.log if c in (reader, 0)]
    # One request per block (its bitmap bytes and its records, pipelined), two replies each.
    sends = [k for k, e in enumerate(log) if e == "send"]
    assert len(sends) == 3 and log.count("read") == 6 and log.count("handed") == 3, log
    for n, at in enumerate(sends):
        assert log[:at].count("read") == 2 * n, f"block {n} asked for with a reply unread: {log}"
    for n, at in enumerate(k for k, e in enumerate(log) if e == "handed"):
        assert log[:at].count("send") == min(3, n + 2), f"block {n + 1} not asked for in time: {log}"


def test_an_export_whose_connection_breaks_or_is_left_reads_every_block_once(
    tmp_path: Path, redis_url: str
) -> None:
    """Whichever reply the connection breaks on, every block is handed over once, in order (the
    rest read through the client), and no connection goes back to the pool with a reply unread:
    the next reads and a PING get their own answers. So too when the caller stops after a block."""
    queue, sweep, sid = _logged_queue(tmp_path, redis_url)
    task = sweep.task.key  # type: ignore[attr-defined]
    clean = list(queue.read_ranges(sid, task, RANGES))
    assert [text.count("],[") for _, text in clean] == [8191] * 3
    for fail_at in range(1, 7):  # each of the 6 replies (a bitmap and records per block)
        _Logged.log.clear()
        _Logged.fail_at = fail_at
        assert list(queue.read_ranges(sid, task, RANGES)) == clean, f"broken at reply {fail_at}"
        assert _Logged.fail_at is None  # it did break
        assert queue.connection.ping() and list(queue.read_ranges(sid, task, RANGES)) == clean
    for fail_send_at in range(1, 4):  # each block's request: the second and third go out once
        _Logged.log.clear()  # the block before them is read, and before it is handed over
        _Logged.fail_send_at = fail_send_at
        assert list(queue.read_ranges(sid, task, RANGES)) == clean, f"broken at request {fail_send_at}"
        assert _Logged.fail_send_at is None
        assert queue.connection.ping() and list(queue.read_ranges(sid, task, RANGES)) == clean
    reading = queue.read_ranges(sid, task, RANGES)
    assert next(reading) == clean[0]
    reading.close()  # the next block's request is out, its replies unread
    assert queue.connection.ping() and list(queue.read_ranges(sid, task, RANGES)) == clean
