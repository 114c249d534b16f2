"""The sections of a sweep spec: its axes (params, zip, rows, samples, repeat), task and options.

Each section is validated into the model of `axes` and `sweep` (an axis, a TaskSpec, Options), with
errors naming the key and why (`checks`). `axis_from_dict` rebuilds an axis from its canonical dict.
Pure apart from reading a rows CSV.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import keyword
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swarmrun.definition.axes import (
    Axis,
    Distribution,
    LinspaceAxis,
    LogspaceAxis,
    ParamAxis,
    RangeAxis,
    RepeatAxis,
    RowsAxis,
    SamplesAxis,
    ValuesAxis,
    ZipAxis,
)
from swarmrun.definition.checks import (
    check_keys,
    fail,
    integer,
    is_number,
    join_key,
    mapping,
    number,
    or_default,
    scalar,
    show,
)
from swarmrun.definition.sweep import BUILTIN_PLACEHOLDERS, Options, TaskSpec, command_placeholders
from swarmrun.execution.outputs import parse_output_options

TASK_KEYS = ("call", "command", "env", "version")
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "int", "choice")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CALL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z", re.ASCII)


def param_axis(where: str, name: str, spec: Any) -> ParamAxis:
    """The axis of a `params` entry: a list, a scalar, or one of {linspace, logspace, range}."""
    if isinstance(spec, list | tuple):
        if not spec:
            raise fail(where, "empty list: an axis needs at least one value")
        return ValuesAxis(name, _scalars(where, spec))
    if not isinstance(spec, Mapping):
        return ValuesAxis(name, (scalar(where, spec),))
    if len(spec) != 1:
        check_keys(where, spec, ("linspace", "logspace", "range"))
        raise fail(
            where, f"expected exactly one of linspace, logspace, range; got {', '.join(map(str, spec))}"
        )
    ((kind, args),) = spec.items()
    check_keys(where, spec, ("linspace", "logspace", "range"))
    form = {
        "linspace": "[start, stop, count]",
        "logspace": "[start, stop, count] or [start, stop, count, base]",
        "range": "[stop], [start, stop] or [start, stop, step]",
    }[kind]
    sizes = {"linspace": (3,), "logspace": (3, 4), "range": (1, 2, 3)}[kind]
    if not isinstance(args, list | tuple) or len(args) not in sizes:
        raise fail(where, f"{kind} needs {form}, got {show(args)}")
    if kind == "range":
        return _range_axis(where, name, [integer(where, x, "each range argument") for x in args])
    start, stop = (number(where, x, f"{kind} start and stop") for x in args[:2])
    count = integer(where, args[2], f"{kind} count", minimum=1)
    if not math.isfinite(stop - start):
        raise fail(where, f"{kind} {show(list(args))} overflows a float")
    if kind == "linspace":
        return LinspaceAxis(name, start, stop, count)
    base = number(where, args[3], "logspace base") if len(args) == 4 else 10.0
    if base <= 0:
        raise fail(where, f"logspace base must be > 0, got {args[3]}")
    try:
        if not all(math.isfinite(base**x) for x in (start, stop)):
            raise OverflowError
    except OverflowError:
        raise fail(where, f"logspace {show(list(args))} overflows a float") from None
    return LogspaceAxis(name, start, stop, count, base)


def _scalars(where: str, values: Sequence[Any]) -> tuple[Any, ...]:
    """`values` checked one by one, each located as `where[k]`."""
    return tuple(scalar(f"{where}[{k}]", v) for k, v in enumerate(values))


def _range_axis(where: str, name: str, args: list[int]) -> RangeAxis:
    """`[stop]`, `[start, stop]` or `[start, stop, step]`, as Python's range()."""
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], (args + [1])[2])
    if step == 0:
        raise fail(where, "range step must not be 0")
    axis = RangeAxis(name, start, stop, step)
    if axis.size == 0:
        raise fail(where, f"range {show(args)} is empty")
    return axis


def distribution(where: str, name: str, spec: Any) -> Distribution:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise fail(
            where,
            f"expected one of {', '.join(DISTRIBUTIONS)} with its arguments, "
            f"like {{uniform: [0, 1]}}; got {show(spec)}",
        )
    check_keys(where, spec, DISTRIBUTIONS)
    ((kind, args),) = spec.items()
    if kind == "choice":
        if not isinstance(args, list | tuple) or not args:
            raise fail(where, f"choice needs a non-empty list of values, got {show(args)}")
        return Distribution(name, kind, _scalars(where, args))
    form = {
        "uniform": "[low, high]",
        "loguniform": "[low, high]",
        "normal": "[mean, stddev]",
        "int": "[low, high]",
    }
    if not isinstance(args, list | tuple) or len(args) != 2:
        raise fail(where, f"{kind} needs {form[kind]}, got {show(args)}")
    if kind == "int":
        lo, hi = (integer(where, x, "each int bound") for x in args)
        if max(abs(lo), abs(hi)) > 2**53:
            raise fail(where, f"int bounds must be within +-2**53 (exact in a float), got {show(list(args))}")
        if lo > hi:
            raise fail(where, f"int needs low <= high, got {show(list(args))}")
        return Distribution(name, kind, (lo, hi))
    a, b = (number(where, x, f"{kind} arguments") for x in args)
    if kind == "normal" and b < 0:
        raise fail(where, f"normal stddev must be >= 0, got {b}")
    if kind != "normal" and a > b:
        raise fail(where, f"{kind} needs low <= high, got {show(list(args))}")
    if kind == "loguniform" and a <= 0:
        raise fail(where, f"loguniform needs 0 < low, got {show(list(args))}")
    if not math.isfinite(b - a if kind != "normal" else abs(a) + 10 * b):
        raise fail(where, f"{kind} {show(list(args))} overflows a float")
    return Distribution(name, kind, (a, b))


def axis_from_dict(where: str, d: Any) -> Axis:
    """Rebuild one axis from its canonical dict."""
    d = mapping(where, d)
    if "param" in d:
        name = param_name(where, d["param"])
        rest = {k: v for k, v in d.items() if k != "param"}
        if "values" in rest:
            return param_axis(where, name, list(rest["values"]))
        if set(rest) & set(DISTRIBUTIONS):
            raise fail(where, "a distribution is not an axis")
        return param_axis(where, name, rest)
    if "zip" in d:
        return ZipAxis(tuple(_as_param(where, axis_from_dict(where, m)) for m in d["zip"]))
    if "rows" in d:
        r = mapping(where, d["rows"])
        cols = tuple(param_name(where, c) for c in r["columns"])
        return RowsAxis(cols, tuple(tuple(scalar(where, v) for v in row) for row in r["values"]))
    if "samples" in d:
        s = mapping(where, d["samples"])
        dists = []
        for p in s["params"]:
            dists.append(
                distribution(
                    where, param_name(where, p["param"]), {k: v for k, v in p.items() if k != "param"}
                )
            )
        return SamplesAxis(integer(where, s["n"], "n", 1), integer(where, s["seed"], "seed"), tuple(dists))
    if "repeat" in d:
        r = mapping(where, d["repeat"])
        seed = r.get("seed")
        return RepeatAxis(
            integer(where, r["n"], "n", 1), None if seed is None else integer(where, seed, "seed")
        )
    raise fail(where, f"unknown axis {show(d)}")


def _as_param(where: str, axis: Axis) -> ParamAxis:
    if not isinstance(axis, ParamAxis):
        raise fail(where, "zip members must be single params")
    return axis


def param_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name):
        raise fail(where, f"param name {show(name)} must be a Python identifier and not a keyword")
    if name in BUILTIN_PLACEHOLDERS:
        raise fail(where, f"param name '{name}' is reserved (a builtin placeholder)")
    return name


def parse_task(where: str, data: Any, names: Sequence[str] | None) -> TaskSpec:
    """The task section; `names` (params of the sweep) checks command placeholders when given."""
    where = join_key(where, "task")
    if data is None:
        raise fail(where, "missing; give task.call (pkg.mod:func) or task.command (an argv list)")
    data = mapping(where, data)
    check_keys(where, data, TASK_KEYS)
    call, command = data.get("call"), data.get("command")
    if (call is None) == (command is None):
        raise fail(where, "give exactly one of call (pkg.mod:func) or command (an argv list)")
    argv: tuple[str, ...] | None = None
    if call is not None and (not isinstance(call, str) or not _CALL.match(call)):
        raise fail(join_key(where, "call"), f"expected 'package.module:function', got {show(call)}")
    if command is not None:
        if not isinstance(command, list | tuple) or not command:
            raise fail(join_key(where, "command"), f"expected a non-empty argv list, got {show(command)}")
        argv = tuple(_text(f"{join_key(where, 'command')}[{k}]", a) for k, a in enumerate(command))
        known = sorted({*(names or ()), *BUILTIN_PLACEHOLDERS})
        for k, arg in enumerate(argv):
            try:
                fields = command_placeholders(arg)
            except ValueError as e:
                raise fail(f"{join_key(where, 'command')}[{k}]", str(e)) from None
            for f in fields:
                if names is not None and f not in known:
                    raise fail(
                        f"{join_key(where, 'command')}[{k}]",
                        f"unknown placeholder {{{f}}}; known: {', '.join(known)}",
                    )
    env_data = mapping(join_key(where, "env"), or_default(data.get("env"), {}))
    env = {str(var): _text(join_key(join_key(where, "env"), str(var)), v) for var, v in env_data.items()}
    for var in env:
        if not var or "=" in var or "\0" in var:
            raise fail(join_key(where, "env"), f"invalid variable name {var!r}")
    version = data.get("version")
    if version is not None and (not isinstance(version, str | int) or isinstance(version, bool)):
        raise fail(join_key(where, "version"), f"expected a string or an integer, got {show(version)}")
    return TaskSpec(call, argv, env, None if version is None else str(version))


def _text(where: str, x: Any) -> str:
    """A command argument or env value: a string, or a number written as a string."""
    if isinstance(x, str):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        with contextlib.suppress(ValueError):  # past Python's 4300-digit int-to-text limit
            return str(x)
    elif is_number(x) and math.isfinite(x):
        return str(x)
    raise fail(where, f"expected a string or a number, got {show(x)} (quote it to pass it literally)")


def parse_options(where: str, data: Mapping[str, Any]) -> Options:
    timeout = data.get("timeout")
    if timeout is not None and (number(join_key(where, "timeout"), timeout) <= 0):
        raise fail(join_key(where, "timeout"), f"must be > 0 seconds or null, got {timeout}")
    retries = integer(join_key(where, "retries"), or_default(data.get("retries"), 0), minimum=0)
    backoff = number(join_key(where, "backoff"), or_default(data.get("backoff"), 1.0))
    if backoff < 0:
        raise fail(join_key(where, "backoff"), f"must be >= 0 seconds, got {backoff}")
    chunk = data.get("chunk", "auto")
    if chunk not in ("auto", None) and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise fail(join_key(where, "chunk"), f"expected 'auto' or a number of points >= 1, got {show(chunk)}")
    return Options(
        None if timeout is None else float(timeout),
        retries,
        backoff,
        None if chunk in ("auto", None) else chunk,
        **parse_output_options(where, data),
    )


def _cell(where: str, text: str) -> Any:
    """A CSV cell: an int, else a float, else the string itself."""
    s = text.strip()
    if re.fullmatch(r"[+-]?\d+", s):
        if len(s) > 4000:
            raise fail(where, f"an integer of {len(s)} digits is too long")
        return int(s)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", s, re.IGNORECASE):
        return scalar(where, float(s))
    return s


def parse_rows(where: str, data: Any, base_dir: Path) -> RowsAxis:
    where = join_key(where, "rows")
    data = mapping(where, data)
    check_keys(where, data, ("file", "columns"))
    if not isinstance(data.get("file"), str):
        raise fail(join_key(where, "file"), "expected the path of a CSV file (relative to the sweep file)")
    path = base_dir / data["file"]
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise fail(
            join_key(where, "file"), f"cannot read {path}: {getattr(e, 'strerror', None) or e}"
        ) from None
    if len(table) < 2:
        raise fail(join_key(where, "file"), f"{path} is empty: it needs a header line and at least one row")
    header = [h.strip() for h in table[0]]
    wanted = data.get("columns")
    if wanted is None:
        wanted = header
    elif not isinstance(wanted, list) or not wanted or not all(isinstance(c, str) for c in wanted):
        raise fail(
            join_key(where, "columns"), f"expected a non-empty list of column names, got {show(wanted)}"
        )
    for c in wanted:
        if c not in header:
            raise fail(
                join_key(where, "columns"), f"unknown column '{c}' in {path}; columns: {', '.join(header)}"
            )
        param_name(f"{path}: column '{c}'", c)
    twice = sorted({c for c in wanted if wanted.count(c) > 1})
    if twice:
        key = "columns" if "columns" in data else "file"
        raise fail(join_key(where, key), f"column '{twice[0]}' appears twice")
    pos = [header.index(c) for c in wanted]
    rows = []
    for n, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise fail(f"{path}: line {n}", f"{len(row)} cells, but the header has {len(header)}")
        rows.append(tuple(_cell(f"{path}: line {n}, column '{header[p]}'", row[p]) for p in pos))
    return RowsAxis(tuple(wanted), tuple(rows))


def parse_samples(where: str, data: Any) -> SamplesAxis:
    where = join_key(where, "samples")
    data = mapping(where, data)
    check_keys(where, data, ("n", "seed", "params"))
    n = integer(join_key(where, "n"), data.get("n"), minimum=1)
    seed = integer(join_key(where, "seed"), data.get("seed", 0))
    params = mapping(join_key(where, "params"), data.get("params"))
    if not params:
        raise fail(join_key(where, "params"), "empty: give at least one sampled param")
    pw = join_key(where, "params")
    dists = tuple(
        distribution(join_key(pw, str(k)), param_name(join_key(pw, str(k)), k), v) for k, v in params.items()
    )
    return SamplesAxis(n, seed, dists)


def parse_repeat(where: str, data: Any) -> RepeatAxis:
    where = join_key(where, "repeat")
    if isinstance(data, Mapping):
        check_keys(where, data, ("n", "seed"))
        seed = data.get("seed")
        return RepeatAxis(
            integer(join_key(where, "n"), data.get("n"), minimum=1),
            None if seed is None else integer(join_key(where, "seed"), seed),
        )
    if not isinstance(data, int) or isinstance(data, bool) or data < 1:
        raise fail(where, f"expected a count >= 1 or {{n: ..., seed: ...}}, got {show(data)}")
    return RepeatAxis(data)


def zip_groups(where: str, data: Any, params: list[str]) -> list[tuple[str, ...]]:
    """Zip groups with members in `params` order, so a group stands where its first member does."""
    if not isinstance(data, list):
        raise fail(where, f"expected a list of groups like [[x, y]], got {show(data)}")
    groups, used = [], set()
    for k, group in enumerate(data):
        gw = f"{where}[{k}]"
        if not isinstance(group, list) or len(group) < 2:
            raise fail(gw, f"a group is a list of two or more params, like [x, y]; got {show(group)}")
        for m in group:
            if m not in params:
                close = difflib.get_close_matches(str(m), params, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise fail(gw, f"'{m}' is not a param listed under params{hint}")
            if m in used:
                raise fail(gw, f"'{m}' is already zipped")
            used.add(m)
        groups.append(tuple(sorted(group, key=params.index)))
    return groups
