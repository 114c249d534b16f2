"""Record format 3 (ok records by sweep and index, pointers in the key index) on a real Redis:
exports by index equal exports by key, cached points, stores written before format 3, purge."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from swarmrun.definition.sweep import Sweep, point_key
from swarmrun.definition.sweepfile import load_sweep
from swarmrun.execution.export import export
from swarmrun.execution.keys import Keys
from swarmrun.execution.livexport import LiveExport
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import encode_record, iter_results, parse_pointer
from swarmrun.execution.task import Outcome
from tests.conftest import read_csv, write_sweep

# The record script of format 2 (commit 406a222), to write a store as it was written before
# format 3: ok records themselves in the key index, no index buckets, no sweep numbers.
FORMAT2_RECORD_LUA = """
local done, counts, origins, errors, meta, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local executed, duplicates, fresh, entries = 0, 0, 0, 0
local tally = {}
local isolated = ARGV[2] == '1'
local prefix, origin = ARGV[4], nil
local function origin_id()
  if origin then return origin end
  origin = redis.call('HGET', origins, ARGV[5])
  if not origin then
    origin = redis.call('HINCRBY', origins, '#next', 1)
    redis.call('HSET', origins, ARGV[5], origin, '#' .. origin, ARGV[5])
  end
  origin = '[' .. origin .. ','
  return origin
end
for idx, pkey, status, rec in string.gmatch(ARGV[3], '(%d+)\\t([^\\t\\n]*)\\t([^\\t\\n]*)\\t([^\\n]*)\\n') do
  local cached = status == 'cached'
  entries = entries + 1
  if not cached then executed = executed + 1 end
  if redis.call('SETBIT', done, idx, 1) == 0 then
    fresh = fresh + 1
    if cached then
      tally['ok'] = (tally['ok'] or 0) + 1
      tally['cached'] = (tally['cached'] or 0) + 1
    else
      tally[status] = (tally[status] or 0) + 1
      if status == 'ok' then
        redis.call('HSETNX', prefix .. string.sub(pkey, 1, 4), string.sub(pkey, 5), origin_id() .. rec)
      else
        redis.call('HSET', errors, idx, rec)
      end
    end
  elseif not cached then
    duplicates = duplicates + 1
  end
  if isolated then redis.call('HDEL', inflight, idx) end
end
for k, v in pairs(tally) do redis.call('HINCRBY', counts, k, v) end
if executed > 0 then redis.call('HINCRBY', counts, 'executions', executed) end
if duplicates > 0 then redis.call('HINCRBY', counts, 'duplicates', duplicates) end
if entries > 0 then
  redis.call('HINCRBY', counts, 'processed', entries)
  redis.call('HINCRBYFLOAT', counts, 'seconds', ARGV[1])
end
return {fresh, redis.call('HGET', meta, 'state') or ''}
"""


def _grid(tmp_path: Path, n: int, name: str = "sweep.yaml") -> Sweep:
    path = write_sweep(
        tmp_path, f'task: {{call: "fixtures.tasks:square"}}\nparams:\n  x: {{range: [0, {n}]}}\n', name
    )
    return load_sweep(path, ())


Entry = tuple[int, str, str, str]


def _entries(
    sweep: Sweep, sid: str, indices: Sequence[int], outcome: Callable[[int], Outcome], worker: str
) -> list[Entry]:
    """What a worker passes to `SweepQueue.record` for these points."""
    out = []
    for i in indices:
        status, record = encode_record(outcome(i), attempt=1, worker=worker, sweep_id=sid)
        out.append((i, point_key(sweep.point(i)), status, record))
    return out


def _record(queue: SweepQueue, sweep: Sweep, sid: str, entries: list[Entry], worker: str) -> None:
    for start in range(0, len(entries), 4096):
        queue.record(sid, sweep.task.key, entries[start : start + 4096], seconds=0.1, worker=worker)


def _record_format2(rconn: redis.Redis, sweep: Sweep, sid: str, entries: list[Entry], worker: str) -> None:
    """Record as the format-2 script did (`SweepQueue.record` of commit 406a222)."""
    script = rconn.register_script(FORMAT2_RECORD_LUA)
    keys = Keys(sid)
    task = sweep.task.key
    blob = "".join(f"{i}\t{k}\t{s}\t{r}\n" for i, k, s, r in entries)
    script(
        keys=[keys.done, keys.counts, Keys.origins(task), keys.errors, keys.meta, keys.inflight],
        args=["0.1", "0", blob, Keys.buckets(task), f"{sid} {worker}"],
    )


def _cache(queue: SweepQueue, sweep: Sweep, sid: str, indices: Sequence[int], worker: str) -> list[int]:
    """Record the points of `indices` another sweep has as `cached`, as a worker does; returns them."""
    keys = [point_key(sweep.point(i)) for i in indices]
    hits = [
        i for i, hit in zip(indices, queue.cached(sweep.task.key, keys, sweep_id=sid), strict=True) if hit
    ]
    entries = [(i, point_key(sweep.point(i)), "cached", "") for i in hits]
    _record(queue, sweep, sid, entries, worker)
    return hits


def _square(i: int) -> Outcome:
    return Outcome("ok", value=i * i, duration=0.5)


def _cells(path: Path, *names: str) -> list[tuple[str, ...]]:
    return [tuple(row[n] for n in names) for row in read_csv(path)]


def test_ok_records_are_stored_by_sweep_and_index(tmp_path: Path, rconn: redis.Redis) -> None:
    sweep = _grid(tmp_path, 3000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    _record(queue, sweep, sid, _entries(sweep, sid, range(3000), lambda i: Outcome("ok"), "w1"), "w1")
    number = queue.sweep_number(sweep.task.key, sid)
    assert number is not None
    key = point_key(sweep.point(777))
    assert rconn.hget(Keys.buckets(sweep.task.key) + key[:4], key[4:]) is None  # the sole sweep
    assert queue.cached(sweep.task.key, [key]) == [True]  # another asks: it is indexed first
    entry = rconn.hget(Keys.buckets(sweep.task.key) + key[:4], key[4:])
    assert entry is not None and parse_pointer(entry) == (number, 777)
    bucket = Keys.index_bucket(sweep.task.key, number, 777)
    assert bucket.endswith(f":i{number}:6") and rconn.hlen(bucket) == 128
    raw = rconn.hget(bucket, str(777 % 128))
    assert raw is not None and len(raw) <= 40
    record = json.loads(raw)
    assert record[1:4] == [None, 0.0, 1] and len(record) == 5
    assert queue.origins(sweep.task.key) == {record[0]: (sid, "w1")}
    # 128 entries a bucket: listpacks on a Redis with default settings too
    assert rconn.object("encoding", bucket) == b"listpack"
    assert rconn.object("encoding", Keys.buckets(sweep.task.key) + key[:4]) == b"listpack"
    assert not rconn.exists(Keys.store(sweep.task.key))  # the format-1 hash is never written


def _mixed(i: int) -> Outcome:
    """Ok values of every kind, failures and exit codes."""
    if i % 97 == 5:
        return Outcome("error", error=f"boom {i}", traceback="Traceback...", duration=0.25)
    if i % 89 == 7:
        return Outcome("timeout", error="took too long", duration=2.0)
    if i % 13 == 0:
        return Outcome("ok", value={"a": i, "s": f"v,{i}"}, duration=0.5)
    if i % 11 == 0:
        return Outcome("ok", value=i, exit_code=0, duration=0.5)
    return Outcome("ok", value=None if i % 2 else i / 7, duration=0.001 * (i % 10))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_index_export_equals_the_export_by_key(
    tmp_path: Path, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    sweep = _grid(tmp_path, 20000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    done = [i for i in range(20000) if i % 1000 != 999]  # a few points without a result
    _record(queue, sweep, sid, _entries(sweep, sid, done, _mixed, "w1"), "w1")
    assert export(queue, sweep, sid, tmp_path / f"index.{fmt}") == len(done)
    by_index = [
        (r.index, r.params, r.status, r.value, r.error, r.exit_code) for r in iter_results(queue, sweep, sid)
    ]
    assert [r[0] for r in by_index] == done
    monkeypatch.setattr(SweepQueue, "records_range", lambda *args: None)  # as before format 3: by key
    assert export(queue, sweep, sid, tmp_path / f"key.{fmt}") == len(done)
    by_key = [
        (r.index, r.params, r.status, r.value, r.error, r.exit_code) for r in iter_results(queue, sweep, sid)
    ]
    assert by_index == by_key
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "index.parquet").equals(pq.read_table(tmp_path / "key.parquet"))
    else:
        assert (tmp_path / f"index.{fmt}").read_bytes() == (tmp_path / f"key.{fmt}").read_bytes()
    if fmt == "csv":
        rows = {int(r["index"]): r for r in read_csv(tmp_path / "index.csv")}
        assert (rows[5]["status"], rows[5]["error"]) == ("error", "boom 5")
        assert (rows[13]["a"], rows[13]["s"], rows[14]["value"]) == ("13", "v,13", "2.0")


def test_a_resumed_sweep_exports_its_cached_points(tmp_path: Path, rconn: redis.Redis) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    first = _grid(tmp_path, 10)
    fid = queue.submit(first).sweep_id
    _record(queue, first, fid, _entries(first, fid, range(10), _square, "old"), "old")
    second = _grid(tmp_path, 3000, "wider.yaml")
    sid = queue.submit(second).sweep_id
    assert _cache(queue, second, sid, range(3000), "new") == list(range(10))
    _record(queue, second, sid, _entries(second, sid, range(10, 3000), _square, "new"), "new")
    task, number = second.task.key, queue.sweep_number(first.task.key, fid)
    own = queue.sweep_number(task, sid)
    assert own is not None and number is not None and own != number
    for i in (0, 9):  # a cached point's index entry is the key index's pointer
        assert parse_pointer(rconn.hget(Keys.index_bucket(task, own, i), str(i)) or b"") == (number, i)
    for fmt in ("csv", "jsonl"):
        live = LiveExport(queue, second, sid, tmp_path / f"live.{fmt}").start()
        assert live.finish() == export(queue, second, sid, tmp_path / f"after.{fmt}") == 3000
        assert (tmp_path / f"live.{fmt}").read_bytes() == (tmp_path / f"after.{fmt}").read_bytes()
    cells = _cells(tmp_path / "after.csv", "index", "value", "worker", "cached")
    assert cells == [(str(i), str(i * i), "old" if i < 10 else "new", str(i < 10)) for i in range(3000)]
    # the first sweep's own export is unchanged by the second's pointers to it
    assert export(queue, first, fid, tmp_path / "first.csv") == 10
    assert _cells(tmp_path / "first.csv", "value", "cached") == [(str(i * i), "False") for i in range(10)]


def test_a_store_written_before_format_3_still_exports(tmp_path: Path, rconn: redis.Redis) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    old = _grid(tmp_path, 600)
    oid = queue.submit(old).sweep_id
    _record_format2(rconn, old, oid, _entries(old, oid, range(300), _mixed, "w2"), "w2")
    by_index = json.loads(f"[{queue.records_range(oid, old.task.key, 0, 600)}]")  # failures only
    assert [i for i, r in enumerate(by_index) if r != 0] == [
        i for i in range(300) if _mixed(i).status != "ok"
    ]
    assert export(queue, old, oid, tmp_path / "format2.csv") == 300
    before = read_csv(tmp_path / "format2.csv")
    for row in before:
        outcome = _mixed(int(row["index"]))
        value = outcome.value if outcome.status == "ok" and not isinstance(outcome.value, dict) else None
        assert (row["status"], row["error"] or None) == (outcome.status, outcome.error)
        assert row["value"] == ("" if value is None else str(value)) and row["worker"] == "w2"
    assert any(row["a"] for row in before) and len(before) == 300
    # the same sweep goes on after the upgrade: its new points are stored by index
    _record(queue, old, oid, _entries(old, oid, range(300, 600), _square, "w3"), "w3")
    assert export(queue, old, oid, tmp_path / "both.csv") == 600
    rows = read_csv(tmp_path / "both.csv")
    assert [r["index"] for r in rows] == [str(i) for i in range(600)]
    assert {r["cached"] for r in rows} == {"False"}
    assert [(r["value"], r["worker"]) for r in rows[300:]] == [(str(i * i), "w3") for i in range(300, 600)]
    assert rows[:300] == before
    # a wider sweep of the task caches both: format-2 records are copied, pointers copied
    wide = _grid(tmp_path, 800, "wide.yaml")
    wid = queue.submit(wide).sweep_id
    ok = [i for i in range(600) if i >= 300 or _mixed(i).status == "ok"]
    assert _cache(queue, wide, wid, range(800), "w4") == ok
    failed = sorted(set(range(800)) - set(ok))
    _record(queue, wide, wid, _entries(wide, wid, failed, _square, "w4"), "w4")
    assert export(queue, wide, wid, tmp_path / "wide.csv") == 800
    got = {int(r["index"]): r for r in read_csv(tmp_path / "wide.csv")}
    for i in ok:
        assert got[i]["cached"] == "True" and got[i]["worker"] == ("w2" if i < 300 else "w3")
    for i in failed:
        assert (got[i]["value"], got[i]["cached"], got[i]["worker"]) == (str(i * i), "False", "w4")
    by_old = {int(r["index"]): r for r in before}
    assert all(got[i]["value"] == by_old[i]["value"] for i in ok if i < 300)


def test_purging_a_sweep_keeps_the_records_others_cached_from_it(tmp_path: Path, rconn: redis.Redis) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    first = _grid(tmp_path, 10)
    fid = queue.submit(first).sweep_id
    _record(queue, first, fid, _entries(first, fid, range(10), _square, "old"), "old")
    second = _grid(tmp_path, 20, "wider.yaml")
    sid = queue.submit(second).sweep_id
    _cache(queue, second, sid, range(20), "new")
    _record(queue, second, sid, _entries(second, sid, range(10, 20), _square, "new"), "new")
    queue.purge(fid)
    assert not rconn.exists(Keys(fid).meta, Keys(fid).done)
    export(queue, second, sid, tmp_path / "second.csv")
    assert _cells(tmp_path / "second.csv", "value", "worker", "cached") == [
        (str(i * i), "old" if i < 10 else "new", str(i < 10)) for i in range(20)
    ]
    # submitted again, the purged sweep finds its points cached: its own records, not cached
    fid = queue.submit(first).sweep_id
    assert _cache(queue, first, fid, range(10), "again") == list(range(10))
    export(queue, first, fid, tmp_path / "first.csv")
    assert _cells(tmp_path / "first.csv", "value", "worker", "cached") == [
        (str(i * i), "old", "False") for i in range(10)
    ]


def test_record_values_go_by_index_and_by_key_only_for_the_rest(tmp_path: Path, rconn: redis.Redis) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    wide = _grid(tmp_path, 50, "wide.yaml")
    wid = queue.submit(wide).sweep_id
    _record(queue, wide, wid, _entries(wide, wid, range(50), _square, "w"), "w")
    small = _grid(tmp_path, 30)
    sid = queue.submit(small).sweep_id
    _record(queue, small, sid, _entries(small, sid, range(20), lambda i: Outcome("ok", value=-i), "s"), "s")
    asked: list[int] = []

    def keys(indices: Sequence[int]) -> list[str]:
        asked.extend(indices)
        return small.keys_of(indices)

    values: list[Any] = queue.record_values(sid, small.task.key, [3, 25, 19, 40 - 11], keys)
    # 3 and 19 by index (this sweep's own), 25 and 29 (not done here) by key: the wide sweep's
    assert [v[1] for v in values] == [-3, 625, -19, 841] and sorted(asked) == [25, 29]
    assert queue.record_values(sid, small.task.key, [3], small.keys_of) == values[:1]


def test_points_recorded_in_any_order_land_in_their_buckets(tmp_path: Path, rconn: redis.Redis) -> None:
    """A flush groups ok records by index bucket; entries jumping between buckets, failures and
    repeats in between are all stored (or counted) as one at a time would be."""
    sweep = _grid(tmp_path, 1000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    order = [5, 300, 6, 0, 999, 128, 127, 7, 5, 301, 600]
    entries = _entries(
        sweep, sid, order, lambda i: _square(i) if i != 7 else Outcome("error", error="no"), "w"
    )
    _record(queue, sweep, sid, entries, "w")
    got = {r.index: (r.status, r.value) for r in iter_results(queue, sweep, sid)}
    assert got == {i: ("ok", i * i) if i != 7 else ("error", None) for i in set(order)}
    assert queue.progress(sid).duplicates == 1


def test_done_bits_set_in_one_write_per_flush_count_each_point_once(
    tmp_path: Path, rconn: redis.Redis
) -> None:
    """The record script reads the blob's span of done bits once, flips them in Lua and writes
    them back in one SETRANGE: a point already done, one repeated in the blob, bits past the
    bitmap's end, a span crossing byte edges and a span too wide for one read (bit by bit) are
    each what one SETBIT a point gave."""
    n = 3_000_000
    sweep = _grid(tmp_path, n)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    done = Keys(sid).done
    _record(queue, sweep, sid, _entries(sweep, sid, [9, 10, 17], _square, "w"), "w")
    assert rconn.strlen(done) == 3  # the bitmap ends at byte 2
    # 9 is done already, 12 comes twice; 23..41 reach past the bitmap's end
    batch = [7, 9, 12, 12, 16, *range(23, 42)]
    _record(queue, sweep, sid, _entries(sweep, sid, batch, _square, "w"), "w")
    wide = [40, 2_000_000, 41, 2_999_999]  # a span over 2^20 bits: one at a time
    _record(queue, sweep, sid, _entries(sweep, sid, wide, _square, "w"), "w")
    expected = {7, 9, 10, 12, 16, 17, *range(23, 42), 2_000_000, 2_999_999}
    set_bits = {i for i in range(0, 64) if rconn.getbit(done, i)} | {
        i for i in (2_000_000, 2_999_999, 1_999_999, 2_000_001) if rconn.getbit(done, i)
    }
    assert set_bits == expected
    assert int(rconn.bitcount(done)) == len(expected)
    p = queue.progress(sid)
    assert (p.done, p.ok) == (len(expected), len(expected))
    assert p.duplicates == 4  # 9, the second 12, and 40 and 41 again
    got = {r.index: r.value for r in iter_results(queue, sweep, sid)}
    assert got == {i: i * i for i in expected}


def test_the_cached_check_is_skipped_only_for_the_tasks_sole_sweep(
    tmp_path: Path, rconn: redis.Redis
) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    first = _grid(tmp_path, 20)
    fid = queue.submit(first).sweep_id
    origins = Keys.origins(first.task.key)
    _record(queue, first, fid, _entries(first, fid, range(10), _square, "a"), "a")
    assert rconn.hget(origins, "sole") == fid.encode()
    keys = first.keys_of(range(20))
    # its points without a result: nothing to find, nothing looked up; others ask and find
    assert queue.cached(first.task.key, keys, sweep_id=fid) == [False] * 20
    assert queue.cached(first.task.key, keys) == [True] * 10 + [False] * 10
    other = _grid(tmp_path, 30, "other.yaml")
    oid = queue.submit(other).sweep_id
    assert _cache(queue, other, oid, range(30), "b") == list(range(10))
    _record(queue, other, oid, _entries(other, oid, range(10, 15), _square, "b"), "b")
    assert rconn.hget(origins, "sole") is None  # a second sweep has results now
    assert queue.cached(first.task.key, keys, sweep_id=fid)[10:] == [True] * 5 + [False] * 5
    # a purged sole sweep finds its own results again when submitted anew
    alone = write_sweep(
        tmp_path, 'task: {call: "fixtures.tasks:square", version: "2"}\nparams:\n  x: [1, 2]\n', "v2.yaml"
    )
    sweep = load_sweep(alone, ())
    sid = queue.submit(sweep).sweep_id
    _record(queue, sweep, sid, _entries(sweep, sid, range(2), _square, "c"), "c")
    assert rconn.hget(Keys.origins(sweep.task.key), "sole") == sid.encode()
    queue.purge(sid)
    sid = queue.submit(sweep).sweep_id
    assert _cache(queue, sweep, sid, range(2), "c") == [0, 1]
    # a task with results from before format 3 (origins, but no sweep numbers) never has a sole sweep
    old = _grid(tmp_path, 5, "old.yaml")
    old = Sweep(old.name, type(old.task)(old.task.call, None, version="3"), old.axes)
    old_id = queue.submit(old).sweep_id
    _record_format2(rconn, old, old_id, _entries(old, old_id, range(3), _square, "d"), "d")
    _record(queue, old, old_id, _entries(old, old_id, range(3, 5), _square, "d"), "d")
    assert rconn.hget(Keys.origins(old.task.key), "sole") is None


def _key_index(rconn: redis.Redis, task_key: str) -> dict[str, bytes]:
    """The task's key index: point key -> its entry."""
    prefix = Keys.buckets(task_key)
    out: dict[str, bytes] = {}
    for raw in rconn.scan_iter(match=prefix + "????", count=1000):
        bucket = raw.decode()[len(prefix) :]
        if all(c in "0123456789abcdef" for c in bucket):
            out.update({bucket + k.decode(): v for k, v in rconn.hgetall(raw).items()})
    return out


def test_a_sole_sweep_is_put_in_the_key_index_when_another_sweep_asks(
    tmp_path: Path, rconn: redis.Redis
) -> None:
    queue = SweepQueue(rconn, "swarmrun")
    first = _grid(tmp_path, 3000)
    fid = queue.submit(first).sweep_id
    task = first.task.key
    _record(queue, first, fid, _entries(first, fid, range(2000), _square, "a"), "a")
    assert _key_index(rconn, task) == {}  # the task's only sweep: nobody to look its points up for
    wider = _grid(tmp_path, 4000, "wider.yaml")
    told: list[int] = []
    wid = queue.submit(wider, indexing=told.append).sweep_id  # indexed before its chunks go out
    assert told == [2000] and len(_key_index(rconn, task)) == 2000
    assert queue.submit(wider, indexing=told.append).sweep_id == wid and told == [2000]
    assert _cache(queue, wider, wid, range(4000), "b") == list(range(2000))
    number = queue.sweep_number(task, fid)
    index = _key_index(rconn, task)
    assert len(index) == 2000
    assert {parse_pointer(v) for v in index.values()} == {(number, i) for i in range(2000)}
    # the first sweep goes on: its new points are indexed as they are recorded, and found
    _record(queue, first, fid, _entries(first, fid, range(2000, 3000), _square, "a"), "a")
    keys = wider.keys_of(range(2000, 4000))
    assert queue.cached(task, keys, sweep_id=wid) == [True] * 1000 + [False] * 1000
    assert not rconn.exists(Keys.unindexed(task))
    _record(queue, wider, wid, _entries(wider, wid, range(3000, 4000), _square, "b"), "b")
    assert len(_key_index(rconn, task)) == 4000
    # a sole sweep whose rival, submitted before it had results, records before asking: the
    # next lookup indexes it
    solo = _grid(tmp_path, 50, "solo.yaml")
    solo = Sweep(solo.name, type(solo.task)(solo.task.call, None, version="2"), solo.axes)
    rival = Sweep(solo.name, solo.task, _grid(tmp_path, 60, "rival.yaml").axes)
    sid, rid = queue.submit(solo).sweep_id, queue.submit(rival).sweep_id
    _record(queue, solo, sid, _entries(solo, sid, range(30), _square, "c"), "c")
    _record(queue, rival, rid, _entries(rival, rid, range(50, 60), _square, "d"), "d")
    assert rconn.hget(Keys.origins(solo.task.key), "sole") is None
    assert rconn.smembers(Keys.unindexed(solo.task.key)) == {sid.encode()}
    assert queue.cached(solo.task.key, solo.keys_of(range(50))) == [True] * 30 + [False] * 20
    assert not rconn.exists(Keys.unindexed(solo.task.key))
    # a sweep purged (by an earlier version) before it was indexed: its spec is gone, nothing to do
    gone = Sweep(solo.name, type(solo.task)(solo.task.call, None, version="3"), solo.axes)
    gid = queue.submit(gone).sweep_id
    _record(queue, gone, gid, _entries(gone, gid, range(5), _square, "e"), "e")
    rconn.delete(Keys(gid).meta)
    assert queue.cached(gone.task.key, gone.keys_of(range(5))) == [False] * 5
    assert not rconn.exists(Keys.unindexed(gone.task.key))
    # purging a sweep without results leaves the task's sole sweep as it is
    lone = Sweep(solo.name, type(solo.task)(solo.task.call, None, version="4"), solo.axes)
    idle = Sweep(lone.name, lone.task, rival.axes)
    lid, iid = queue.submit(lone).sweep_id, queue.submit(idle).sweep_id
    _record(queue, lone, lid, _entries(lone, lid, range(3), _square, "f"), "f")
    told.clear()
    queue.purge(iid, indexing=told.append)
    assert rconn.hget(Keys.origins(lone.task.key), "sole") == lid.encode() and told == []
    queue.purge(lid, indexing=told.append)
    assert told == [3] and len(_key_index(rconn, lone.task.key)) == 3


def test_an_export_survives_a_redis_error_while_reading_ahead(
    tmp_path: Path, rconn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipelined reader goes on one call at a time (through the client) after an error."""
    sweep = _grid(tmp_path, 40000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    _record(queue, sweep, sid, _entries(sweep, sid, range(40000), _square, "w"), "w")
    assert export(queue, sweep, sid, tmp_path / "calm.csv") == 40000
    connection_class = rconn.connection_pool.connection_class
    original = connection_class.read_response
    calls = {"n": 0, "failed": 0}

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 6:  # in the middle of the third block's replies
            calls["failed"] += 1
            self.disconnect()
            raise redis.ConnectionError("connection lost")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(connection_class, "read_response", flaky)
    assert export(queue, sweep, sid, tmp_path / "rough.csv") == 40000
    assert calls["failed"] == 1
    assert (tmp_path / "rough.csv").read_bytes() == (tmp_path / "calm.csv").read_bytes()


def test_an_export_costs_what_is_recorded_not_the_size_of_the_sweep(
    tmp_path: Path, rconn: redis.Redis
) -> None:
    """A huge sweep with a few points recorded, one of them failed: no range without a done
    point is looked into (no failure lookup per point)."""
    sweep = _grid(tmp_path, 300_000)
    queue = SweepQueue(rconn, "swarmrun")
    sid = queue.submit(sweep).sweep_id
    done = [3, 150_000, 299_999]
    _record(
        queue, sweep, sid, _entries(sweep, sid, done, lambda i: _mixed(5) if i == 3 else _square(i), "w"), "w"
    )
    rconn.config_resetstat()
    assert export(queue, sweep, sid, tmp_path / "few.csv") == 3
    calls = {k: v["calls"] for k, v in rconn.info("commandstats").items()}
    # a few per block of 8,192 (the sweep's number, its failure), none per point
    assert (
        calls.get("cmdstat_hget", 0) <= 3 * calls["cmdstat_evalsha"] and calls.get("cmdstat_hgetall", 0) < 20
    )
    assert _cells(tmp_path / "few.csv", "index", "status", "value") == [
        ("3", "error", ""),
        ("150000", "ok", str(150_000**2)),
        ("299999", "ok", str(299_999**2)),
    ]
