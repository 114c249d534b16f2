"""The Python API on a real Redis and real worker processes (as a notebook user calls it)."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import swarmrun
from swarmrun.errors import SweepFileError
from swarmrun.settings import Settings
from tests.conftest import ROOT

SWEEP = {
    "name": "api-hypot",
    "task": {"call": "fixtures.tasks:hypot"},
    "params": {"x": {"range": [0, 6]}, "y": [0.5, 1.5]},
}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    # Workers import the task from tests/fixtures, as the CLI's workers do.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.chdir(tmp_path)
    yield Settings(redis_url=redis_url, home=tmp_path / "home", heartbeat_ttl=3, maintenance_interval=2)


@pytest.mark.timeout(120)
def test_run_returns_results_as_a_dataframe(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    res = swarmrun.run(SWEEP, workers=2, params={"y": [0.5, 1.5, 2.5]}, settings=settings, progress=True)
    assert isinstance(res, swarmrun.Results)
    assert "18/18" in capsys.readouterr().err  # progress shown when asked
    df = res.to_pandas()
    assert list(df.columns) == [
        "index",
        "x",
        "y",
        "status",
        "r",
        "sum",
        "error",
        "duration",
        "worker",
        "attempt",
        "cached",
    ]
    assert len(df) == 18 and sorted(df["index"]) == list(range(18))  # one row per point
    assert str(df["index"].dtype) == "int64"
    assert str(df["x"].dtype) == "int64"
    assert str(df["y"].dtype) == "float64"
    assert str(df["r"].dtype) == "float64"
    assert str(df["cached"].dtype) == "bool"
    assert set(df["status"]) == {"ok"}
    for row in df.itertuples():
        assert row.r == pytest.approx(math.hypot(row.x, row.y))

    table = res.to_arrow()
    assert table.num_rows == 18 and table.column_names == list(df.columns)
    records = list(res)
    assert [r.index for r in records] == list(range(18)) and res.failed() == []

    again = swarmrun.results(res.sweep_id[:8], settings=settings)
    assert again.sweep_id == res.sweep_id and len(again) == 18

    # a changed sweep of the task: the first one's results are indexed (said), then reused
    changed = swarmrun.run(SWEEP, workers=2, params={"y": [0.5, 3.5]}, settings=settings, progress=True)
    assert "Indexing 18 results of earlier sweeps of this task" in capsys.readouterr().err
    assert sorted(r.index for r in changed if r.cached) == [0, 2, 4, 6, 8, 10]


@pytest.mark.timeout(120)
def test_failed_points_and_submit(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text('task: {call: "fixtures.tasks:fail_on"}\nparams:\n  x: {range: [0, 6]}\n')
    sid = swarmrun.submit(path, settings=settings)
    res = swarmrun.run(path, workers=1, settings=settings)
    assert res.sweep_id == sid
    assert [(r.index, r.params["x"]) for r in res.failed()] == [(3, 3)]
    assert "x=3 is bad" in (res.failed()[0].error or "")
    with pytest.raises(SweepFileError, match="'zz' is not a param"):
        swarmrun.run(path, params={"zz": [1]}, settings=settings)


@pytest.mark.timeout(120)
def test_run_from_inside_a_running_event_loop(settings: Settings) -> None:
    """A notebook cell runs inside Jupyter's asyncio loop: the API must not need one of its own."""

    async def cell() -> swarmrun.Results:
        assert asyncio.get_running_loop().is_running()
        return swarmrun.run(SWEEP, workers=1, settings=settings)

    res = asyncio.run(cell())
    assert len(res.to_pandas()) == 12


@pytest.mark.timeout(120)
def test_run_fetches_the_output_files(settings: Settings, tmp_path: Path) -> None:
    import hashlib

    sweep = {
        "name": "api-files",
        "task": {"call": "fixtures.tasks:write_files"},
        "outputs": ["*.bin"],
        "params": {"i": {"range": [0, 3]}, "size": [2048]},
    }
    res = swarmrun.run(sweep, workers=1, settings=settings)
    got = {r.index: r.files for r in res}
    assert sorted(got) == [0, 1, 2]
    dest = tmp_path / "swarmrun-results" / f"api-files-{res.sweep_id[:8]}"  # the cwd is tmp_path
    for index, files in got.items():
        [(name, size, sha)] = files
        data = (dest / "points" / str(index) / name).read_bytes()
        assert (name, size, len(data)) == ("data.bin", 2048, 2048)
        assert hashlib.sha256(data).hexdigest() == sha
    assert res.fetch_outputs() == dest  # again: nothing left to fetch, same place
