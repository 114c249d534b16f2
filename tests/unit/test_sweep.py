"""Sweep files: parsing, validation, lazy expansion, canonical form and id (no servers)."""

from __future__ import annotations

import itertools
import json
import keyword
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from swarmrun.definition.axes import RangeAxis, repeat_seed
from swarmrun.definition.sweep import (
    MAX_POINTS,
    Options,
    Sweep,
    TaskSpec,
    canonical_json,
    command_placeholders,
    point_key,
    point_keys,
)
from swarmrun.definition.sweepfile import load_sweep, parse_sweep, sweep_from_dict
from swarmrun.errors import SweepFileError

REPO = Path(__file__).resolve().parents[2]
CALL = {"call": "pkg.mod:func"}


def sweep(**data: Any) -> Sweep:
    data.setdefault("task", CALL)
    return parse_sweep(data, source="sweep.yaml")


def points(s: Sweep) -> list[dict[str, Any]]:
    return [s.point(i) for i in range(s.size)]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------ expansion

scalars = st.one_of(
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
list_axes = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
        lambda n: n != "index" and not keyword.iskeyword(n)
    ),
    st.lists(scalars, min_size=1, max_size=4),
    max_size=4,
)


@given(list_axes)
def test_index_to_point_is_the_grid_product_in_order(params: dict[str, list[Any]]) -> None:
    s = sweep(params=params)
    expected = [dict(zip(params, combo, strict=True)) for combo in itertools.product(*params.values())]
    assert s.size == len(expected)
    assert points(s) == expected
    assert s.param_names == tuple(params)
    for outside in (-1, s.size):
        with pytest.raises(IndexError):
            s.point(outside)


@st.composite
def mixed_axes(draw: st.DrawFn) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Random params (lists, linspace, range, zip pairs) and, per axis, its values written out."""
    params: dict[str, Any] = {}
    groups: list[list[str]] = []
    expanded: list[list[dict[str, Any]]] = []
    for k in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["list", "linspace", "range", "zip"]))
        n = draw(st.integers(1, 4))
        if kind == "list":
            values = draw(st.lists(scalars, min_size=n, max_size=n))
            params[f"p{k}"] = values
            expanded.append([{f"p{k}": v} for v in values])
        elif kind == "linspace":
            a, b = draw(st.integers(-5, 5)), draw(st.integers(-5, 5))
            params[f"p{k}"] = {"linspace": [a, b, n]}
            expanded.append([{f"p{k}": float(a) if j == 0 else a + (b - a) * j / (n - 1)} for j in range(n)])
            expanded[-1][-1][f"p{k}"] = float(b) if n > 1 else float(a)
        elif kind == "range":
            start, step = draw(st.integers(-5, 5)), draw(st.sampled_from([-2, -1, 1, 3]))
            params[f"p{k}"] = {"range": [start, start + n * step, step]}
            expanded.append([{f"p{k}": start + j * step} for j in range(n)])
        else:
            params[f"z{k}a"], params[f"z{k}b"] = list(range(n)), [f"v{j}" for j in range(n)]
            groups.append([f"z{k}b", f"z{k}a"])
            expanded.append([{f"z{k}a": j, f"z{k}b": f"v{j}"} for j in range(n)])
    return {"params": params, "zip": groups}, expanded


@given(mixed_axes())
def test_mixed_axes_expand_like_the_product_of_their_values(case: tuple[dict[str, Any], Any]) -> None:
    data, expanded = case
    s = sweep(**data)
    expected = [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*expanded)]
    assert s.size == len(expected)
    assert points(s) == expected
    assert [list(p) for p in points(s)] == [list(p) for p in expected]  # keys in axis order


def test_no_axes_is_one_empty_point() -> None:
    s = sweep()
    assert (s.size, s.point(0), s.param_names) == (1, {}, ())


def test_scalar_is_a_constant_and_equals_a_one_element_list() -> None:
    assert points(sweep(params={"dt": 0.01, "x": [1, 2]})) == [{"dt": 0.01, "x": 1}, {"dt": 0.01, "x": 2}]
    assert sweep(params={"dt": 0.01}).id == sweep(params={"dt": [0.01]}).id
    assert sweep(params={"dt": 1}) != sweep(params={"dt": 1.0}) != sweep(params={"dt": True})
    assert sweep(params={"dt": 1}).id != sweep(params={"dt": 1.0}).id


def test_linspace_like_numpy() -> None:
    s = sweep(params={"w": {"linspace": [0.5, 2.0, 16]}})
    values = [p["w"] for p in points(s)]
    assert len(values) == 16 and values[0] == 0.5 and values[-1] == 2.0
    assert values == [0.5 + 1.5 * k / 15 for k in range(15)] + [2.0]
    assert [p["w"] for p in points(sweep(params={"w": {"linspace": [3, 7, 1]}}))] == [3.0]
    assert [p["w"] for p in points(sweep(params={"w": {"linspace": [1, 0, 3]}}))] == [1.0, 0.5, 0.0]


def test_logspace_with_default_and_explicit_base() -> None:
    s = sweep(params={"lr": {"logspace": [-4, -1, 4]}})
    assert [p["lr"] for p in points(s)] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-12)
    assert s.point(3)["lr"] == 10.0**-1
    assert sweep(params={"lr": {"logspace": [-4, -1, 4, 10]}}).id == s.id
    assert [p["b"] for p in points(sweep(params={"b": {"logspace": [0, 3, 4, 2]}}))] == [1.0, 2.0, 4.0, 8.0]


@given(st.integers(-50, 50), st.integers(-50, 50), st.integers(-7, 7).filter(bool))
def test_range_matches_python_range(start: int, stop: int, step: int) -> None:
    spec = {"n": {"range": [start, stop, step]}}
    if not range(start, stop, step):
        with pytest.raises(SweepFileError, match="params.n: range .* is empty"):
            sweep(params=spec)
        return
    assert [p["n"] for p in points(sweep(params=spec))] == list(range(start, stop, step))


def test_range_short_forms() -> None:
    assert [p["n"] for p in points(sweep(params={"n": {"range": [3]}}))] == [0, 1, 2]
    assert [p["n"] for p in points(sweep(params={"n": {"range": [1, 4]}}))] == [1, 2, 3]


def test_zip_varies_together_at_first_members_position() -> None:
    s = sweep(
        params={"a": [1, 2], "x": [10, 20, 30], "b": ["p", "q"], "y": {"linspace": [0, 1, 3]}},
        zip=[["y", "x"]],
    )
    assert s.param_names == ("a", "x", "y", "b")
    assert s.size == 2 * 3 * 2
    assert [(p["x"], p["y"]) for p in points(s)][:6] == [
        (10, 0.0),
        (10, 0.0),
        (20, 0.5),
        (20, 0.5),
        (30, 1.0),
        (30, 1.0),
    ]
    assert s.point(1) == {"a": 1, "x": 10, "y": 0.0, "b": "q"}


def test_axis_order_params_rows_samples_repeat(tmp_path: Path) -> None:
    write(tmp_path / "pts.csv", "u,v\n1,2\n3,4\n")
    data = {
        "task": CALL,
        "repeat": 2,
        "samples": {"n": 2, "seed": 1, "params": {"s": {"uniform": [0, 1]}}},
        "rows": {"file": "pts.csv"},
        "params": {"a": [1, 2]},
    }
    s = parse_sweep(data, base_dir=tmp_path)
    assert s.param_names == ("a", "u", "v", "s", "repeat")
    assert [p["repeat"] for p in points(s)[:4]] == [0, 1, 0, 1]
    assert [(p["a"], p["u"]) for p in points(s)][::4] == [(1, 1), (1, 3), (2, 1), (2, 3)]


def test_rows_parse_cells_and_are_embedded(tmp_path: Path) -> None:
    write(tmp_path / "pts.csv", "name, a ,b,c\nfoo,1,2.5,x\n bar , -3 ,1e3,\n")
    s = parse_sweep({"task": CALL, "rows": {"file": "pts.csv"}}, base_dir=tmp_path)
    assert points(s) == [
        {"name": "foo", "a": 1, "b": 2.5, "c": "x"},
        {"name": "bar", "a": -3, "b": 1000.0, "c": ""},
    ]
    subset = parse_sweep(
        {"task": CALL, "rows": {"file": "pts.csv", "columns": ["b", "a"]}}, base_dir=tmp_path
    )
    assert points(subset) == [{"b": 2.5, "a": 1}, {"b": 1000.0, "a": -3}]
    spec = json.loads(json.dumps(s.to_dict()))
    (tmp_path / "pts.csv").unlink()
    assert points(sweep_from_dict(spec)) == points(s)


SAMPLES: dict[str, Any] = {
    "n": 50,
    "seed": 7,
    "params": {
        "lr": {"loguniform": [1.0e-5, 1.0e-1]},
        "dropout": {"uniform": [0.0, 0.5]},
        "width": {"normal": [0.0, 1.0]},
        "layers": {"int": [1, 8]},
        "act": {"choice": ["relu", "tanh"]},
    },
}


def test_samples_within_bounds_and_reproducible() -> None:
    s = sweep(samples=SAMPLES)
    got = points(s)
    assert s.size == 50 and s.param_names == ("lr", "dropout", "width", "layers", "act")
    assert all(1e-5 <= p["lr"] <= 1e-1 and 0 <= p["dropout"] <= 0.5 for p in got)
    assert {p["layers"] for p in got} <= set(range(1, 9)) and {p["act"] for p in got} == {"relu", "tanh"}
    assert len({p["layers"] for p in got}) > 4 and any(p["width"] < 0 for p in got)
    assert got == points(sweep(samples=SAMPLES))
    assert got == points(sweep_from_dict(json.loads(json.dumps(s.to_dict()))))
    assert got != points(sweep(samples={**SAMPLES, "seed": 8}))
    # Adding a sampled param leaves the others' draws unchanged.
    more = sweep(samples={**SAMPLES, "params": {**SAMPLES["params"], "extra": {"uniform": [0, 1]}}})
    assert [p["lr"] for p in points(more)] == [p["lr"] for p in got]


def test_samples_and_repeat_seeds_same_in_a_fresh_process_with_another_hash_seed() -> None:
    s = sweep(samples=SAMPLES, repeat={"n": 3, "seed": 42}, params={"x": ["a", "b"]})
    script = (
        "import json, sys; from swarmrun.definition.sweepfile import sweep_from_dict; "
        "s = sweep_from_dict(json.loads(sys.stdin.read())); "
        "print(json.dumps([s.point(i) for i in range(s.size)]))"
    )
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(s.to_dict()),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out) == points(s)


def test_samples_pinned_values() -> None:
    """Computed once from the code: sampled values are part of the format, like the id."""
    s = sweep(samples={"n": 1, "seed": 7, "params": {"u": {"uniform": [0, 1]}, "k": {"int": [0, 9]}}})
    assert s.point(0) == {"u": 0.13901798929127163, "k": 7}


def test_repeat_forms() -> None:
    assert points(sweep(repeat=3)) == [{"repeat": 0}, {"repeat": 1}, {"repeat": 2}]
    assert sweep(repeat={"n": 3}).id == sweep(repeat=3).id
    seeded = points(sweep(repeat={"n": 4, "seed": 42}))
    assert [p["repeat"] for p in seeded] == [0, 1, 2, 3]
    seeds = [p["seed"] for p in seeded]
    assert seeds == [repeat_seed(42, k) for k in range(4)] and len(set(seeds)) == 4
    assert all(0 <= x < 2**31 for x in seeds)
    assert seeds != [p["seed"] for p in points(sweep(repeat={"n": 4, "seed": 43}))]


# ------------------------------------------------------------------------------------ canonical form


FIXED: dict[str, Any] = {
    "name": "fixed",
    "task": {"call": "oscillator:simulate", "env": {"OMP_NUM_THREADS": 1}, "version": 2},
    "params": {"gamma": [0.05, 0.1], "omega": {"linspace": [0.5, 2.0, 16]}, "n": {"range": [1, 10]}},
    "repeat": {"n": 2, "seed": 42},
}
FIXED_ID = "a5a75dd0772c75d1"


def test_id_is_pinned() -> None:
    """Computed once from the code; a change here means every existing sweep id changes."""
    s = parse_sweep(FIXED)
    assert s.id == FIXED_ID
    assert len(s.task.key) == 16 and int(s.task.key, 16) >= 0


def test_id_ignores_name_options_and_key_order() -> None:
    base = parse_sweep(FIXED).id
    assert (
        parse_sweep({**FIXED, "name": "other", "timeout": 5, "retries": 3, "backoff": 0, "chunk": 10}).id
        == base
    )
    reordered = {k: FIXED[k] for k in reversed(list(FIXED))}
    reordered["task"] = dict(reversed(list(FIXED["task"].items())))
    assert parse_sweep(reordered).id == base


@pytest.mark.parametrize(
    "change",
    [
        {"task": {**FIXED["task"], "call": "oscillator:simulate2"}},
        {"task": {**FIXED["task"], "version": 3}},
        {"task": {**FIXED["task"], "env": {"OMP_NUM_THREADS": 2}}},
        {"params": {**FIXED["params"], "gamma": [0.05, 0.2]}},
        {"params": {**FIXED["params"], "gamma": [0.1, 0.05]}},
        {"params": {**FIXED["params"], "omega": {"linspace": [0.5, 2.0, 17]}}},
        {"params": {**FIXED["params"], "extra": 1}},
        {"repeat": {"n": 2, "seed": 43}},
        {"repeat": 2},
    ],
)
def test_id_changes_with_any_value(change: dict[str, Any]) -> None:
    assert parse_sweep({**FIXED, **change}).id != FIXED_ID


def test_round_trip_is_exact(tmp_path: Path) -> None:
    write(tmp_path / "p.csv", "a,b\n1,x\n2,y\n")
    data = {
        **FIXED,
        "task": {"command": ["python3", "run.py", "{gamma:.3f}", 2, "{index}"], "env": {"A": "b"}},
        "params": {
            **FIXED["params"],
            "x": [1, 2.0, "s", True, None],
            "y": [1, 2, 3, 4, 5],
            "eta": {"logspace": [-3, 0, 4]},
        },
        "zip": [["x", "y"]],
        "rows": {"file": "p.csv"},
        "samples": SAMPLES,
        "timeout": 2.5,
        "retries": 1,
        "chunk": 7,
    }
    s = parse_sweep(data, base_dir=tmp_path)
    for d in (s.to_dict(), json.loads(json.dumps(s.to_dict()))):
        t = sweep_from_dict(d)
        assert t == s and t.id == s.id and hash(t) == hash(s) and t.options == s.options
        assert [t.point(i) for i in range(0, s.size, 97)] == [s.point(i) for i in range(0, s.size, 97)]
    assert s.to_dict()["format"] == 1 and s.task.command == (
        "python3",
        "run.py",
        "{gamma:.3f}",
        "2",
        "{index}",
    )


def test_huge_sweep_spec_stays_tiny() -> None:
    s = sweep(params={"a": {"linspace": [0, 1, 100]}, "b": {"range": [100]}, "c": {"logspace": [-3, 3, 100]}})
    assert s.size == 10**6
    assert len(canonical_json(s.to_dict())) < 2048
    assert s.point(999_999) == {"a": 1.0, "b": 99, "c": 1000.0}
    huge = Sweep("huge", TaskSpec("a:b", None), (RangeAxis("n", 0, 10**30, 1), RangeAxis("m", 0, 10**30, 1)))
    assert huge.point(10**60 - 1) == {"n": 10**30 - 1, "m": 10**30 - 1}  # the model stays lazy


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({f"p{k}": list(range(10)) for k in range(30)}, "about 10^30 points"),
        ({"n": {"range": [10**30]}, "m": {"range": [10**30]}}, "about 10^60 points"),
        ({"n": {"range": [-(10**9), 1]}}, "1,000,000,001 points"),
    ],
)
def test_a_sweep_too_large_is_refused_with_its_size(params: dict[str, object], size: str) -> None:
    with pytest.raises(SweepFileError) as e:
        sweep(params=params)
    assert str(e.value) == f"sweep.yaml: {size} is more than a sweep may have (1,000,000,000)"
    assert sweep(params={"n": {"range": [10**9]}}).size == MAX_POINTS


def test_point_key_and_canonical_json() -> None:
    assert point_key({"a": 1, "b": 2.5}) == point_key({"b": 2.5, "a": 1})
    assert point_key({"a": 1}) != point_key({"a": 1.0}) != point_key({"a": "1"})
    assert len(point_key({})) == 16
    assert canonical_json({"b": [1, 2.0], "a": "é"}) == '{"a":"\\u00e9","b":[1,2.0]}'
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


_JSON_SCALARS = (
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.booleans()
    | st.none()
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@given(
    st.lists(st.text(max_size=5), min_size=0, max_size=4, unique=True).flatmap(
        lambda names: st.tuples(
            st.just(names), st.lists(st.fixed_dictionaries({n: _JSON_VALUES for n in names}), max_size=6)
        )
    )
)
def test_point_keys_in_bulk_equal_point_key(case: tuple[list[str], list[dict[str, Any]]]) -> None:
    names, points = case
    assert point_keys(names, points) == [point_key(p) for p in points]


def test_point_keys_of_grid_columns_and_bad_values() -> None:
    points = [
        {"b": b, "a": a, "c": c}
        for a in (0, -0.0, 0.0, 1.5, "x", True, None)
        for b in ("é", "%s")
        for c in (1, 2)
    ]
    assert point_keys(["b", "a", "c"], points) == [point_key(p) for p in points]
    assert point_keys(["%", "a"], [{"%": 1, "a": 2}]) == [point_key({"%": 1, "a": 2})]
    assert point_keys([], [{}, {}]) == [point_key({})] * 2
    with pytest.raises(ValueError):
        point_keys(["a"], [{"a": 1.0}, {"a": float("nan")}])


def test_options_defaults_and_values() -> None:
    assert sweep().options == Options(timeout=None, retries=0, backoff=1.0, chunk=None)
    s = sweep(timeout=60, retries=2, backoff=0.5, chunk=10)
    assert s.options == Options(timeout=60.0, retries=2, backoff=0.5, chunk=10)
    assert sweep(chunk="auto", timeout=None).options.chunk is None
    assert sweep(retries=None, backoff=None, chunk=None, params=None, zip=None, name=None) == sweep()


def test_task_spec() -> None:
    s = sweep(
        task={"command": ["python3", "x.py", 3, 0.5, "{n}"], "env": {"B": 1, "A": "x"}}, params={"n": 1}
    )
    assert s.task == TaskSpec(None, ("python3", "x.py", "3", "0.5", "{n}"), {"A": "x", "B": "1"}, None)
    assert list(s.task.env) == ["A", "B"]
    assert s.task.to_dict() == {
        "command": ["python3", "x.py", "3", "0.5", "{n}"],
        "env": {"A": "x", "B": "1"},
    }
    assert sweep(task={"call": "a.b:c.d", "version": 1}).task.to_dict() == {"call": "a.b:c.d", "version": "1"}


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path / "my-sweep.yaml", "task: {call: 'a:b'}\n")
    assert load_sweep(path).name == "my-sweep"
    assert load_sweep(tmp_path / "my-sweep.yaml").size == 1


# ------------------------------------------------------------------------------------------ overrides


BASE: dict[str, Any] = {
    "task": CALL,
    "params": {"alpha": [1], "beta": ["x", "y"], "x": [1, 2], "y": [3, 4]},
    "zip": [["x", "y"]],
}


@pytest.mark.parametrize(
    ("override", "values"),
    [
        ("alpha=0.1,0.2,0.5", [0.1, 0.2, 0.5]),
        ("alpha=0.3", [0.3]),
        ("alpha=1e-3", [0.001]),
        ("alpha=relu,tanh", ["relu", "tanh"]),
        ("alpha=range(3)", [0, 1, 2]),
        ("alpha=range(1,4)", [1, 2, 3]),
        ("alpha=range(0, 100, 40)", [0, 40, 80]),
        ("alpha=linspace(0,1,3)", [0.0, 0.5, 1.0]),
        ("alpha=logspace(-2,0,3)", [0.01, 0.1, 1.0]),
        ("alpha=[1, 2]", [1, 2]),
        ("alpha={linspace: [0, 1, 5]}", [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("alpha={range: [2]}", [0, 1]),
    ],
)
def test_override_replaces_in_place(override: str, values: list[Any]) -> None:
    s = parse_sweep(BASE, overrides=[override])
    assert s.param_names == ("alpha", "beta", "x", "y")
    assert [p["alpha"] for p in points(s) if p["beta"] == "x" and p["x"] == 1] == pytest.approx(values)


def test_override_appends_new_axis_last_among_params(tmp_path: Path) -> None:
    s = parse_sweep({**BASE, "repeat": 2}, overrides=["+gamma=5,6", "alpha=7"])
    assert s.param_names == ("alpha", "beta", "x", "y", "gamma", "repeat")
    assert s.size == 1 * 2 * 2 * 2 * 2
    assert {p["alpha"] for p in points(s)} == {7}
    assert parse_sweep(BASE, overrides=["alpha=1"]).id == parse_sweep(BASE).id


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("x=1,2", "-p x=1,2: 'x' is zipped"),
        ("u=1", "-p u=1: 'u' comes from rows"),
        ("s=1", "-p s=1: 's' comes from samples"),
        ("repeat=1", "-p repeat=1: 'repeat' comes from repeat"),
        ("alpha", "-p alpha: expected name=values"),
        ("alpha=", "-p alpha=: expected name=values"),
        ("=1", "-p =1: expected name=values"),
        ("1a=1", "-p 1a=1: param name '1a'"),
        ("index=1", "-p index=1: param name 'index' is reserved"),
        ("alpha=range(a)", "-p alpha=range(a): each range argument must be an integer"),
        ("alpha=range()", "-p alpha=range(): range needs"),
        ("alpha=linspace(0,1)", "-p alpha=linspace(0,1): linspace needs [start, stop, count]"),
        ("alpha=[1, 2", "-p alpha=[1, 2: cannot parse"),
        ("alpha={lnspace: [0, 1, 2]}", "did you mean 'linspace'"),
        ("alpha=[[1]]", "-p alpha=[[1]][0]: values must be numbers"),
        ("alpha=.nan", "non-finite"),
        ("zz=1,2", "-p zz=1,2: 'zz' is not a param of this sweep (its params: alpha, beta, x, y, u, s,"),
        ("alpah=1", "did you mean 'alpha'? write +alpah=1 to add one"),
        ("+alpha=1", "-p +alpha=1: 'alpha' is a param of this sweep already; write alpha=1 to change it"),
        ("+u=1", "'u' is a param of this sweep already"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, message: str) -> None:
    write(tmp_path / "p.csv", "u\n1\n")
    data = {
        **BASE,
        "rows": {"file": "p.csv"},
        "samples": {"n": 1, "params": {"s": {"uniform": [0, 1]}}},
        "repeat": 2,
    }
    with pytest.raises(SweepFileError) as e:
        parse_sweep(data, base_dir=tmp_path, overrides=[override])
    assert message in str(e.value)


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"task": CALL, "parms": {}}, "sweep.yaml: unknown key 'parms' (did you mean 'params'?)"),
        ({"task": {"cal": "a:b"}}, "sweep.yaml: task: unknown key 'cal' (did you mean 'call'?)"),
        ({}, "sweep.yaml: task: missing"),
        ({"task": {"call": "a:b", "command": ["x"]}}, "sweep.yaml: task: give exactly one of call"),
        ({"task": {"env": {}}}, "sweep.yaml: task: give exactly one of call"),
        ({"task": {"call": "a.b"}}, "sweep.yaml: task.call: expected 'package.module:function'"),
        ({"task": {"call": "a:b:c"}}, "task.call"),
        ({"task": {"call": "a b:c"}}, "task.call"),
        ({"task": {"call": 3}}, "task.call"),
        ({"task": {"command": []}}, "sweep.yaml: task.command: expected a non-empty argv list"),
        ({"task": {"command": "python3 x.py"}}, "task.command: expected a non-empty argv list"),
        ({"task": {"command": ["x", ["y"]]}}, "sweep.yaml: task.command[1]: expected a string or a number"),
        ({"task": {"command": ["x", True]}}, "task.command[1]: expected a string or a number"),
        (
            {"task": {"command": ["x", "{gama}"]}, "params": {"gamma": 1, "alpha": 2}},
            "sweep.yaml: task.command[1]: unknown placeholder {gama}; "
            "known: alpha, gamma, index, outdir, sweep_id",
        ),
        ({"task": {"command": ["x", "{}"]}}, "task.command[1]: positional placeholder"),
        ({"task": {"command": ["x", "{0}"]}}, "task.command[1]: positional placeholder"),
        (
            {"task": {"command": ["x", "{a.b}"]}, "params": {"a": 1}},
            "task.command[1]: attribute or item access",
        ),
        (
            {"task": {"command": ["x", "{a[0]}"]}, "params": {"a": 1}},
            "task.command[1]: attribute or item access",
        ),
        ({"task": {"command": ["x", "{a"]}, "params": {"a": 1}}, "task.command[1]: bad placeholder syntax"),
        ({"task": {"command": ["x", "a}"]}}, "task.command[1]: bad placeholder syntax"),
        ({"task": {"command": ["x", "{a!x}"]}, "params": {"a": 1}}, "task.command[1]: conversion !x"),
        ({"task": {"call": "a:b", "env": ["A=1"]}}, "sweep.yaml: task.env: expected a mapping"),
        (
            {"task": {"call": "a:b", "env": {"A": None}}},
            "sweep.yaml: task.env.A: expected a string or a number",
        ),
        ({"task": {"call": "a:b", "env": {"A=B": "1"}}}, "task.env: invalid variable name"),
        (
            {"task": {"call": "a:b", "version": 1.5}},
            "sweep.yaml: task.version: expected a string or an integer",
        ),
        ({"task": CALL, "name": ""}, "sweep.yaml: name: expected a non-empty one-line string"),
        ({"task": CALL, "params": [1]}, "sweep.yaml: params: expected a mapping"),
        ({"task": CALL, "params": []}, "sweep.yaml: params: expected a mapping"),
        ({"task": CALL, "zip": {}}, "sweep.yaml: zip: expected a list of groups"),
        ({"task": {"call": "a:b", "env": []}}, "sweep.yaml: task.env: expected a mapping"),
        ({"task": CALL, "name": "two\nlines"}, "sweep.yaml: name: expected a non-empty one-line string"),
        (
            {"task": CALL, "params": {"d": object()}},
            "params.d: values must be numbers, strings, booleans or null",
        ),
        (
            {"task": CALL, "params": {"1x": 1}},
            "sweep.yaml: params.1x: param name '1x' must be a Python identifier",
        ),
        ({"task": CALL, "params": {"a-b": 1}}, "params.a-b: param name 'a-b'"),
        (
            {"task": CALL, "params": {"class": 1}},
            "params.class: param name 'class' must be a Python identifier and not a keyword",
        ),
        ({"task": CALL, "params": {"index": 1}}, "params.index: param name 'index' is reserved"),
        ({"task": CALL, "params": {"sweep_id": 1}}, "params.sweep_id: param name 'sweep_id' is reserved"),
        ({"task": CALL, "params": {"a": []}}, "sweep.yaml: params.a: empty list"),
        (
            {"task": CALL, "params": {"a": [1, [2]]}},
            "sweep.yaml: params.a[1]: values must be numbers, strings, booleans or null, got a list",
        ),
        ({"task": CALL, "params": {"a": [{"b": 1}]}}, "params.a[0]: values must be numbers"),
        ({"task": CALL, "params": {"a": float("inf")}}, "params.a: non-finite number"),
        ({"task": CALL, "params": {"a": [1, float("nan")]}}, "params.a[1]: non-finite number"),
        ({"task": CALL, "params": {"a": {}}}, "params.a: expected exactly one of linspace, logspace, range"),
        (
            {"task": CALL, "params": {"a": {"linspace": [0, 1, 2], "range": [3]}}},
            "params.a: expected exactly one",
        ),
        (
            {"task": CALL, "params": {"a": {"linspce": [0, 1, 2]}}},
            "params.a: unknown key 'linspce' (did you mean 'linspace'?)",
        ),
        (
            {"task": CALL, "params": {"omega": {"linspace": [0.5, 2.0]}}},
            "sweep.yaml: params.omega: linspace needs [start, stop, count], got [0.5, 2.0]",
        ),
        ({"task": CALL, "params": {"a": {"linspace": [0, 1, 0]}}}, "params.a: linspace count must be >= 1"),
        (
            {"task": CALL, "params": {"a": {"linspace": [0, 1, 2.5]}}},
            "params.a: linspace count must be an integer",
        ),
        (
            {"task": CALL, "params": {"a": {"linspace": ["0", 1, 2]}}},
            "params.a: linspace start and stop must be a finite number",
        ),
        ({"task": CALL, "params": {"a": {"linspace": 3}}}, "params.a: linspace needs"),
        ({"task": CALL, "params": {"a": {"logspace": [0, 1]}}}, "params.a: logspace needs"),
        ({"task": CALL, "params": {"a": {"logspace": [0, 1, 3, 0]}}}, "params.a: logspace base must be > 0"),
        (
            {"task": CALL, "params": {"a": {"logspace": [0, 400, 3]}}},
            "params.a: logspace [0, 400, 3] overflows",
        ),
        (
            {"task": CALL, "params": {"a": {"range": []}}},
            "params.a: range needs [stop], [start, stop] or [start, stop, step]",
        ),
        (
            {"task": CALL, "params": {"a": {"range": [0, 1.5]}}},
            "params.a: each range argument must be an integer",
        ),
        ({"task": CALL, "params": {"a": {"range": [0, 5, 0]}}}, "params.a: range step must not be 0"),
        ({"task": CALL, "params": {"a": {"range": [5, 1]}}}, "params.a: range [5, 1] is empty"),
        ({"task": CALL, "zip": [["x", "y"]]}, "sweep.yaml: zip[0]: 'x' is not a param listed under params"),
        (
            {"task": CALL, "params": {"xx": [1], "y": [2]}, "zip": [["x", "y"]]},
            "zip[0]: 'x' is not a param listed under params (did you mean 'xx'?)",
        ),
        (
            {"task": CALL, "params": {"x": [1], "y": [2], "z": [3]}, "zip": [["x", "y"], ["y", "z"]]},
            "sweep.yaml: zip[1]: 'y' is already zipped",
        ),
        ({"task": CALL, "params": {"x": [1]}, "zip": [["x", "x"]]}, "zip[0]: 'x' is already zipped"),
        (
            {"task": CALL, "params": {"x": [1, 2], "y": [1, 2, 3]}, "zip": [["x", "y"]]},
            "sweep.yaml: zip[0]: members have unequal lengths: x=2, y=3",
        ),
        (
            {"task": CALL, "params": {"x": [1], "y": [2]}, "zip": ["x", "y"]},
            "sweep.yaml: zip[0]: a group is a list of two or more params",
        ),
        ({"task": CALL, "params": {"x": [1]}, "zip": [["x"]]}, "zip[0]: a group is a list of two or more"),
        ({"task": CALL, "zip": {"x": "y"}}, "sweep.yaml: zip: expected a list of groups"),
        (
            {"task": CALL, "samples": {"n": 0, "params": {"a": {"uniform": [0, 1]}}}},
            "sweep.yaml: samples.n: must be >= 1, got 0",
        ),
        (
            {"task": CALL, "samples": {"params": {"a": {"uniform": [0, 1]}}}},
            "sweep.yaml: samples.n: must be an integer, got null",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "seed": "x", "params": {"a": {"uniform": [0, 1]}}}},
            "sweep.yaml: samples.seed: must be an integer",
        ),
        ({"task": CALL, "samples": {"n": 2, "params": {}}}, "sweep.yaml: samples.params: empty"),
        (
            {"task": CALL, "samples": {"n": 2, "sed": 1, "params": {"a": {"uniform": [0, 1]}}}},
            "samples: unknown key 'sed' (did you mean 'seed'?)",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"unifrm": [0, 1]}}}},
            "sweep.yaml: samples.params.a: unknown key 'unifrm' (did you mean 'uniform'?)",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": [0, 1]}}},
            "samples.params.a: expected one of uniform, loguniform",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"uniform": [1, 0]}}}},
            "samples.params.a: uniform needs low <= high",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"uniform": [0]}}}},
            "samples.params.a: uniform needs [low, high]",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"loguniform": [0, 1]}}}},
            "samples.params.a: loguniform needs 0 < low",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"normal": [0, -1]}}}},
            "samples.params.a: normal stddev must be >= 0",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"int": [1, 0.5]}}}},
            "samples.params.a: each int bound must be an integer",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"int": [3, 1]}}}},
            "samples.params.a: int needs low <= high",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"choice": []}}}},
            "samples.params.a: choice needs a non-empty list",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"a": {"choice": [[1]]}}}},
            "samples.params.a[0]: values must be numbers",
        ),
        (
            {"task": CALL, "samples": {"n": 2, "params": {"in": {"uniform": [0, 1]}}}},
            "samples.params.in: param name 'in'",
        ),
        (
            {"task": CALL, "repeat": 0},
            "sweep.yaml: repeat: expected a count >= 1 or {n: ..., seed: ...}, got 0",
        ),
        ({"task": CALL, "repeat": "5"}, "sweep.yaml: repeat: expected a count >= 1"),
        (
            {"task": CALL, "repeat": {"n": 2, "seeed": 1}},
            "sweep.yaml: repeat: unknown key 'seeed' (did you mean 'seed'?)",
        ),
        (
            {"task": CALL, "repeat": {"n": 2, "seed": 1.5}},
            "sweep.yaml: repeat.seed: must be an integer, got 1.5",
        ),
        (
            {"task": CALL, "params": {"repeat": 1}, "repeat": 2},
            "sweep.yaml: repeat: param 'repeat' is defined twice (also in sweep.yaml: params)",
        ),
        (
            {"task": CALL, "params": {"seed": 1}, "repeat": {"n": 2, "seed": 1}},
            "sweep.yaml: repeat: param 'seed' is defined twice",
        ),
        (
            {"task": CALL, "params": {"a": 1}, "samples": {"n": 1, "params": {"a": {"uniform": [0, 1]}}}},
            "sweep.yaml: samples: param 'a' is defined twice",
        ),
        (
            {
                "task": CALL,
                "samples": {"n": 1, "params": {"seed": {"uniform": [0, 1]}}},
                "repeat": {"n": 1, "seed": 1},
            },
            "sweep.yaml: repeat: param 'seed' is defined twice (also in sweep.yaml: samples)",
        ),
        ({"task": CALL, "timeout": 0}, "sweep.yaml: timeout: must be > 0 seconds or null"),
        ({"task": CALL, "timeout": -1}, "sweep.yaml: timeout: must be > 0"),
        ({"task": CALL, "timeout": "1m"}, "sweep.yaml: timeout: must be a finite number, got '1m'"),
        ({"task": CALL, "retries": -1}, "sweep.yaml: retries: must be >= 0, got -1"),
        ({"task": CALL, "retries": 1.5}, "sweep.yaml: retries: must be an integer, got 1.5"),
        ({"task": CALL, "backoff": -0.5}, "sweep.yaml: backoff: must be >= 0 seconds"),
        ({"task": CALL, "backoff": True}, "sweep.yaml: backoff: must be a finite number, got true"),
        ({"task": CALL, "chunk": 0}, "sweep.yaml: chunk: expected 'auto' or a number of points >= 1, got 0"),
        (
            {"task": CALL, "chunk": "big"},
            "sweep.yaml: chunk: expected 'auto' or a number of points >= 1, got 'big'",
        ),
    ],
)
def test_validation_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SweepFileError) as e:
        parse_sweep(data, source="sweep.yaml")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SweepFileError, match="sweep.yaml: expected a mapping"):
        parse_sweep([1, 2], source="sweep.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("csv_text", "rows", "message"),
    [
        (None, {"file": "p.csv"}, "sweep.yaml: rows.file: cannot read"),
        ("", {"file": "p.csv"}, "sweep.yaml: rows.file:"),
        ("a,b\n", {"file": "p.csv"}, "is empty: it needs a header line and at least one row"),
        (
            "a,b\n1,2\n",
            {"file": "p.csv", "columns": ["a", "c"]},
            "sweep.yaml: rows.columns: unknown column 'c'",
        ),
        (
            "a,b\n1,2\n",
            {"file": "p.csv", "columns": []},
            "sweep.yaml: rows.columns: expected a non-empty list",
        ),
        ("a,b\n1,2\n", {"file": "p.csv", "columns": ["a", "a"]}, "rows.columns: column 'a' appears twice"),
        ("a,b\n1,2\n", {"fle": "p.csv"}, "sweep.yaml: rows: unknown key 'fle' (did you mean 'file'?)"),
        ("a,a\n1,2\n", {"file": "p.csv"}, "sweep.yaml: rows.file: column 'a' appears twice"),
        ("a,b\n1,2\n", {"columns": ["a"]}, "sweep.yaml: rows.file: expected the path of a CSV file"),
        ("a,b c\n1,2\n", {"file": "p.csv"}, "column 'b c': param name 'b c' must be a Python identifier"),
        ("a,b\n1,2,3\n", {"file": "p.csv"}, "p.csv: line 2: 3 cells, but the header has 2"),
        ("a,b\n1,nan\n", {"file": "p.csv"}, "p.csv: line 2, column 'b': non-finite number"),
        ("index,b\n1,2\n", {"file": "p.csv"}, "param name 'index' is reserved"),
    ],
)
def test_rows_errors(tmp_path: Path, csv_text: str | None, rows: dict[str, Any], message: str) -> None:
    if csv_text is not None:
        (tmp_path / "p.csv").write_text(csv_text)
    with pytest.raises(SweepFileError) as e:
        parse_sweep({"task": CALL, "rows": rows}, source="sweep.yaml", base_dir=tmp_path)
    assert message in str(e.value)


def test_rows_duplicate_with_params(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SweepFileError, match="sweep.yaml: rows: param 'a' is defined twice"):
        parse_sweep(
            {"task": CALL, "params": {"a": 1}, "rows": {"file": "p.csv"}},
            source="sweep.yaml",
            base_dir=tmp_path,
        )


def test_placeholders_may_use_format_specs_conversions_and_literal_braces() -> None:
    s = sweep(
        task={"command": ["x", "--a={alpha:.3f}", "{alpha!r}", "{{literal}}", "{index}-{sweep_id}"]},
        params={"alpha": 1},
    )
    assert s.task.command is not None and len(s.task.command) == 5
    assert command_placeholders("--a={alpha:.3f}/{b!s}{{c}}") == ["alpha", "b"]
    assert command_placeholders("plain") == []
    for bad in ("{}", "{0}", "{a.b}", "{a[0]}", "{a", "a}", "{a:{w}}", "{a!x}"):
        with pytest.raises(ValueError):
            command_placeholders(bad)


def test_from_dict_rejects_malformed_specs() -> None:
    good = sweep(params={"a": [1, 2]}).to_dict()
    for bad in (
        {**good, "format": 2},
        {**good, "axes": [{"param": "a"}]},
        {**good, "axes": [{"nope": 1}]},
        {**good, "axes": [{"param": "a", "values": [1]}, {"param": "a", "values": [2]}]},
        {**good, "axes": [{"zip": []}]},
        {**good, "task": {}},
        [1],
    ):
        with pytest.raises(SweepFileError, match="sweep spec"):
            sweep_from_dict(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- files


YAML_TEXT = """\
name: demo
task:
  call: pkg.mod:run
  env: {OMP_NUM_THREADS: "1"}
timeout: 60
params:
  gamma: [0.05, 0.1, 0.2]
  omega: {linspace: [0.5, 2.0, 16]}
  lr: 1e-3
repeat: {n: 2, seed: 42}
"""
TOML_TEXT = """\
name = "demo"
timeout = 60

[task]
call = "pkg.mod:run"
env = { OMP_NUM_THREADS = "1" }

[params]
gamma = [0.05, 0.1, 0.2]
omega = { linspace = [0.5, 2.0, 16] }
lr = 1e-3

[repeat]
n = 2
seed = 42
"""


def test_yaml_toml_and_json_files_give_the_same_sweep(tmp_path: Path) -> None:
    from_yaml = load_sweep(write(tmp_path / "s.yaml", YAML_TEXT))
    from_toml = load_sweep(write(tmp_path / "s.toml", TOML_TEXT))
    json_data = {
        "name": "demo",
        "task": {"call": "pkg.mod:run", "env": {"OMP_NUM_THREADS": "1"}},
        "timeout": 60,
        "params": {"gamma": [0.05, 0.1, 0.2], "omega": {"linspace": [0.5, 2.0, 16]}, "lr": 0.001},
        "repeat": {"n": 2, "seed": 42},
    }
    from_json = load_sweep(write(tmp_path / "s.json", json.dumps(json_data)))
    assert from_yaml == from_toml == from_json
    assert from_yaml.point(0)["lr"] == 0.001  # `1e-3` is a float, as in YAML 1.2, not the string "1e-3"
    assert from_yaml.size == 3 * 16 * 2


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.yaml", "task:\n  call: a:b\nparams:\n  a: [1, 2\n", "s.yaml: line 5: YAML error:"),
        (
            "s.yaml",
            "task: {call: 'a:b'}\nparams:\n  a: 1\n  a: 2\n",
            "s.yaml: line 4: YAML error: duplicate key 'a'",
        ),
        ("s.yaml", "", "s.yaml: empty file"),
        ("s.yaml", "- 1\n- 2\n", "s.yaml: expected a mapping"),
        (
            "s.yaml",
            "task: {call: 'a:b'}\n? [1, 2]\n: 3\n",
            "s.yaml: line 2: YAML error: found unhashable key",
        ),
        ("s.yaml", "task: {call: 'a:b'}\nparams: {d: 2024-01-01}\n", "(quote it to make it a string)"),
        (
            "s.yaml",
            "task: {call: 'a:b'}\nparams: {d: 2024-01-01}\n",
            "s.yaml: params.d: values must be numbers",
        ),
        ("s.toml", "[task]\ncall = \n", "s.toml: TOML syntax error:"),
        (
            "s.toml",
            "[task]\ncall = 'a:b'\n[params]\nd = 2024-01-01\n",
            "s.toml: params.d: values must be numbers",
        ),
        ("s.json", '{"task": {"call": "a:b"},\n "params": }', "s.json: line 2: JSON syntax error"),
        ("s.json", '{"task": {"call": "a:b"}, "task": {"call": "c:d"}}', "s.json: duplicate key"),
        (
            "s.yaml",
            "task: {call: 'a:b'}\nparams: {x: [1]}\nzip: [[x, y]]\n",
            "s.yaml: zip[0]: 'y' is not a param",
        ),
    ],
)
def test_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(SweepFileError) as e:
        load_sweep(path)
    assert message in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SweepFileError, match="nope.yaml: cannot read: No such file"):
        load_sweep(tmp_path / "nope.yaml")


def test_rows_path_is_relative_to_the_sweep_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "p.csv", "a\n1\n2\n")
    path = write(tmp_path / "sub" / "s.yaml", "task: {call: 'a:b'}\nrows: {file: p.csv}\n")
    assert points(load_sweep(path)) == [{"a": 1}, {"a": 2}]


# ------------------------------------------------------------------------------------------- examples


def test_quickstart_example() -> None:
    s = load_sweep(REPO / "examples/quickstart/sweep.yaml")
    assert s.task.call == "oscillator:simulate" and 200 <= s.size <= 400
    sys.path.insert(0, str(REPO / "examples/quickstart"))
    try:
        import oscillator
    finally:
        sys.path.remove(str(REPO / "examples/quickstart"))
    for i in (0, s.size // 2, s.size - 1):
        result = oscillator.simulate(**s.point(i))
        assert set(result) >= {"amplitude", "phase", "energy"}
        assert all(isinstance(v, float) and v == v for v in result.values())


def test_numbers_past_a_float_in_a_command_or_env_are_written_as_text() -> None:
    """An integer too large for a float (found by the fuzzer) is an argument, not an OverflowError."""
    big = 10**320
    s = parse_sweep({"task": {"command": ["echo", big], "env": {"N": big}}})
    assert s.task.command == ("echo", str(big)) and s.task.env == {"N": str(big)}
    with pytest.raises(SweepFileError, match="expected a string or a number"):
        parse_sweep({"task": {"command": ["echo", 10**5000]}})  # past Python's int-to-text limit


def test_command_example() -> None:
    s = load_sweep(REPO / "examples/command/sweep.yaml")
    assert s.task.command is not None and 10 <= s.size <= 40
    params = s.point(0)
    argv = [a.format(**params, index=0, sweep_id=s.id) for a in s.task.command]
    argv[0] = sys.executable
    out = subprocess.run(
        argv, cwd=REPO / "examples/command", capture_output=True, text=True, check=True, timeout=60
    )
    value = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(value["pi"] - 3.14159) < 0.2


# ------------------------------------------------------------------------------------------------ docs


def doc_blocks(language: str) -> list[str]:
    text = (REPO / "docs/sweep-file.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_docs_toml_examples_parse_and_match_the_quickstart() -> None:
    blocks = doc_blocks("toml")
    assert len(blocks) == 2
    quickstart = parse_sweep(tomllib.loads(blocks[0]), source="sweep.toml")
    assert quickstart == load_sweep(REPO / "examples/quickstart/sweep.yaml")
    tuning = parse_sweep(tomllib.loads(blocks[1]), source="tuning.toml")
    assert tuning.param_names == ("lr", "width", "depth", "repeat", "seed") and tuning.size == 4 * 3 * 3


def test_docs_first_example_has_the_documented_canonical_form(tmp_path: Path) -> None:
    write(tmp_path / "points.csv", "a,b\n1,2.5\n3,x\n")
    path = write(tmp_path / "sweep.yaml", doc_blocks("yaml")[0])
    assert load_sweep(path).to_dict() == json.loads(doc_blocks("json")[0])


def test_docs_axis_order_example() -> None:
    s = parse_sweep({"task": CALL, **yaml.safe_load(doc_blocks("yaml")[-1])})
    assert s.size == 12
    assert s.point(3) == {"a": 1, "b": "q", "repeat": 1}
    assert s.point(6) == {"a": 2, "b": "p", "repeat": 0}
    assert s.point(11) == {"a": 2, "b": "r", "repeat": 1}
