"""Sweep files: parse and validate YAML/TOML/JSON specs and `-p name=values` overrides.

Every error names the key and why (`SweepFileError`). Pure apart from reading the sweep file and
a rows CSV. `sweep_from_dict` rebuilds a sweep from its canonical dict (as stored in Redis).
"""

from __future__ import annotations

import csv
import difflib
import json
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
from swarmrun.definition.sweep import (
    BUILTIN_PLACEHOLDERS,
    FORMAT,
    MAX_POINTS,
    Options,
    Sweep,
    TaskSpec,
    command_placeholders,
)
from swarmrun.errors import SweepFileError
from swarmrun.execution.outputs import OUTPUT_KEYS, parse_output_options

OPTION_KEYS = ("timeout", "retries", "backoff", "chunk", *OUTPUT_KEYS)
AXIS_KEYS = ("params", "zip", "rows", "samples", "repeat")
TOP_KEYS = ("name", "task", *OPTION_KEYS, *AXIS_KEYS)
TASK_KEYS = ("call", "command", "env", "version")
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "int", "choice")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CALL = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z", re.ASCII)
_FLOAT_MAX = 1.7976931348623157e308
MAX_DEPTH = 32  # levels of nesting in a sweep file; a real one has at most about six
_OVERRIDE_FN = re.compile(r"(range|linspace|logspace)\((.*)\)\Z", re.DOTALL)

# ---------------------------------------------------------------------------------------------- values


def _one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped, as repr() writes them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(where: str, why: str) -> SweepFileError:
    """The error for `where` (a file and key, or an override); one line of bounded length."""
    return SweepFileError(_one_line(f"{_cut(where, 200)}: {_cut(why, 400)}"))


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    except (ValueError, RecursionError):  # an int past Python's digit limit; deep nesting
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _scalar(where: str, x: Any) -> Any:
    """Check that `x` is a JSON scalar (number, string, boolean, null) and finite."""
    if x is None or isinstance(x, str | bool | int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise _fail(where, f"non-finite number {x} is not allowed")
        return x
    if isinstance(x, list | tuple | Mapping):
        kind = "a list" if isinstance(x, list | tuple) else "a mapping"
        raise _fail(where, f"values must be numbers, strings, booleans or null, got {kind}: {_show(x)}")
    raise _fail(
        where,
        f"values must be numbers, strings, booleans or null, got a {type(x).__name__} {_show(x)} "
        "(quote it to make it a string)",
    )


def _number(where: str, x: Any, what: str = "") -> float:
    """`x` as a float; `what` names it in the message when the key alone does not."""
    if not _is_number(x) or abs(x) > _FLOAT_MAX or not math.isfinite(x):
        raise _fail(where, f"{what} must be a finite number, got {_show(x)}".lstrip())
    return float(x)


def _int(where: str, x: Any, what: str = "", minimum: int | None = None) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise _fail(where, f"{what} must be an integer, got {_show(x)}".lstrip())
    if minimum is not None and x < minimum:
        raise _fail(where, f"{what} must be >= {minimum}, got {x}".lstrip())
    return x


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; valid: {', '.join(allowed)}"
            raise _fail(where, f"unknown key '{_cut(str(key), 40)}'{hint}")


def _mapping(where: str, x: Any) -> Mapping[str, Any]:
    if not isinstance(x, Mapping):
        raise _fail(where, f"expected a mapping, got {_show(x)}")
    return x


def _or(value: Any, default: Any) -> Any:
    """`value`, or `default` when it is null (an empty section in YAML)."""
    return default if value is None else value


def _join(where: str, key: str) -> str:
    """Extend a `file: key.path` location by one key."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


# ------------------------------------------------------------------------------------------- parsing


def _param_axis(where: str, name: str, spec: Any) -> ParamAxis:
    """The axis of a `params` entry: a list, a scalar, or one of {linspace, logspace, range}."""
    if isinstance(spec, list | tuple):
        if not spec:
            raise _fail(where, "empty list: an axis needs at least one value")
        return ValuesAxis(name, tuple(_scalar(f"{where}[{k}]", v) for k, v in enumerate(spec)))
    if not isinstance(spec, Mapping):
        return ValuesAxis(name, (_scalar(where, spec),))
    if len(spec) != 1:
        _check_keys(where, spec, ("linspace", "logspace", "range"))
        raise _fail(
            where, f"expected exactly one of linspace, logspace, range; got {', '.join(map(str, spec))}"
        )
    ((kind, args),) = spec.items()
    _check_keys(where, spec, ("linspace", "logspace", "range"))
    form = {
        "linspace": "[start, stop, count]",
        "logspace": "[start, stop, count] or [start, stop, count, base]",
        "range": "[stop], [start, stop] or [start, stop, step]",
    }[kind]
    sizes = {"linspace": (3,), "logspace": (3, 4), "range": (1, 2, 3)}[kind]
    if not isinstance(args, list | tuple) or len(args) not in sizes:
        raise _fail(where, f"{kind} needs {form}, got {_show(args)}")
    if kind == "range":
        return _range_axis(where, name, [_int(where, x, "each range argument") for x in args])
    start, stop = (_number(where, x, f"{kind} start and stop") for x in args[:2])
    count = _int(where, args[2], f"{kind} count", minimum=1)
    if not math.isfinite(stop - start):
        raise _fail(where, f"{kind} {_show(list(args))} overflows a float")
    if kind == "linspace":
        return LinspaceAxis(name, start, stop, count)
    base = _number(where, args[3], "logspace base") if len(args) == 4 else 10.0
    if base <= 0:
        raise _fail(where, f"logspace base must be > 0, got {args[3]}")
    try:
        if not all(math.isfinite(base**x) for x in (start, stop)):
            raise OverflowError
    except OverflowError:
        raise _fail(where, f"logspace {_show(list(args))} overflows a float") from None
    return LogspaceAxis(name, start, stop, count, base)


def _range_axis(where: str, name: str, args: list[int]) -> RangeAxis:
    """`[stop]`, `[start, stop]` or `[start, stop, step]`, as Python's range()."""
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], (args + [1])[2])
    if step == 0:
        raise _fail(where, "range step must not be 0")
    axis = RangeAxis(name, start, stop, step)
    if axis.size == 0:
        raise _fail(where, f"range {_show(args)} is empty")
    return axis


def _distribution(where: str, name: str, spec: Any) -> Distribution:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise _fail(
            where,
            f"expected one of {', '.join(DISTRIBUTIONS)} with its arguments, "
            f"like {{uniform: [0, 1]}}; got {_show(spec)}",
        )
    _check_keys(where, spec, DISTRIBUTIONS)
    ((kind, args),) = spec.items()
    if kind == "choice":
        if not isinstance(args, list | tuple) or not args:
            raise _fail(where, f"choice needs a non-empty list of values, got {_show(args)}")
        return Distribution(name, kind, tuple(_scalar(f"{where}[{k}]", v) for k, v in enumerate(args)))
    form = {
        "uniform": "[low, high]",
        "loguniform": "[low, high]",
        "normal": "[mean, stddev]",
        "int": "[low, high]",
    }
    if not isinstance(args, list | tuple) or len(args) != 2:
        raise _fail(where, f"{kind} needs {form[kind]}, got {_show(args)}")
    if kind == "int":
        lo, hi = (_int(where, x, "each int bound") for x in args)
        if max(abs(lo), abs(hi)) > 2**53:
            raise _fail(
                where, f"int bounds must be within +-2**53 (exact in a float), got {_show(list(args))}"
            )
        if lo > hi:
            raise _fail(where, f"int needs low <= high, got {_show(list(args))}")
        return Distribution(name, kind, (lo, hi))
    a, b = (_number(where, x, f"{kind} arguments") for x in args)
    if kind == "normal" and b < 0:
        raise _fail(where, f"normal stddev must be >= 0, got {b}")
    if kind != "normal" and a > b:
        raise _fail(where, f"{kind} needs low <= high, got {_show(list(args))}")
    if kind == "loguniform" and a <= 0:
        raise _fail(where, f"loguniform needs 0 < low, got {_show(list(args))}")
    if not math.isfinite(b - a if kind != "normal" else abs(a) + 10 * b):
        raise _fail(where, f"{kind} {_show(list(args))} overflows a float")
    return Distribution(name, kind, (a, b))


def _axis_from_dict(where: str, d: Any) -> Axis:
    """Rebuild one axis from its canonical dict."""
    d = _mapping(where, d)
    if "param" in d:
        name = _param_name(where, d["param"])
        rest = {k: v for k, v in d.items() if k != "param"}
        if "values" in rest:
            return _param_axis(where, name, list(rest["values"]))
        if set(rest) & set(DISTRIBUTIONS):
            raise _fail(where, "a distribution is not an axis")
        return _param_axis(where, name, rest)
    if "zip" in d:
        return ZipAxis(tuple(_as_param(where, _axis_from_dict(where, m)) for m in d["zip"]))
    if "rows" in d:
        r = _mapping(where, d["rows"])
        cols = tuple(_param_name(where, c) for c in r["columns"])
        return RowsAxis(cols, tuple(tuple(_scalar(where, v) for v in row) for row in r["values"]))
    if "samples" in d:
        s = _mapping(where, d["samples"])
        dists = []
        for p in s["params"]:
            dists.append(
                _distribution(
                    where, _param_name(where, p["param"]), {k: v for k, v in p.items() if k != "param"}
                )
            )
        return SamplesAxis(_int(where, s["n"], "n", 1), _int(where, s["seed"], "seed"), tuple(dists))
    if "repeat" in d:
        r = _mapping(where, d["repeat"])
        seed = r.get("seed")
        return RepeatAxis(_int(where, r["n"], "n", 1), None if seed is None else _int(where, seed, "seed"))
    raise _fail(where, f"unknown axis {_show(d)}")


def _as_param(where: str, axis: Axis) -> ParamAxis:
    if not isinstance(axis, ParamAxis):
        raise _fail(where, "zip members must be single params")
    return axis


def _param_name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name):
        raise _fail(where, f"param name {_show(name)} must be a Python identifier and not a keyword")
    if name in BUILTIN_PLACEHOLDERS:
        raise _fail(where, f"param name '{name}' is reserved (a builtin placeholder)")
    return name


def _parse_task(where: str, data: Any, names: Sequence[str] | None) -> TaskSpec:
    """The task section; `names` (params of the sweep) checks command placeholders when given."""
    where = _join(where, "task")
    if data is None:
        raise _fail(where, "missing; give task.call (pkg.mod:func) or task.command (an argv list)")
    data = _mapping(where, data)
    _check_keys(where, data, TASK_KEYS)
    call, command = data.get("call"), data.get("command")
    if (call is None) == (command is None):
        raise _fail(where, "give exactly one of call (pkg.mod:func) or command (an argv list)")
    argv: tuple[str, ...] | None = None
    if call is not None and (not isinstance(call, str) or not _CALL.match(call)):
        raise _fail(_join(where, "call"), f"expected 'package.module:function', got {_show(call)}")
    if command is not None:
        if not isinstance(command, list | tuple) or not command:
            raise _fail(_join(where, "command"), f"expected a non-empty argv list, got {_show(command)}")
        argv = tuple(_text(f"{_join(where, 'command')}[{k}]", a) for k, a in enumerate(command))
        known = sorted({*(names or ()), *BUILTIN_PLACEHOLDERS})
        for k, arg in enumerate(argv):
            try:
                fields = command_placeholders(arg)
            except ValueError as e:
                raise _fail(f"{_join(where, 'command')}[{k}]", str(e)) from None
            for f in fields:
                if names is not None and f not in known:
                    raise _fail(
                        f"{_join(where, 'command')}[{k}]",
                        f"unknown placeholder {{{f}}}; known: {', '.join(known)}",
                    )
    env_data = _mapping(_join(where, "env"), _or(data.get("env"), {}))
    env = {str(var): _text(_join(_join(where, "env"), str(var)), v) for var, v in env_data.items()}
    for var in env:
        if not var or "=" in var or "\0" in var:
            raise _fail(_join(where, "env"), f"invalid variable name {var!r}")
    version = data.get("version")
    if version is not None and (not isinstance(version, str | int) or isinstance(version, bool)):
        raise _fail(_join(where, "version"), f"expected a string or an integer, got {_show(version)}")
    return TaskSpec(call, argv, env, None if version is None else str(version))


def _text(where: str, x: Any) -> str:
    """A command argument or env value: a string, or a number written as a string."""
    if isinstance(x, str):
        return x
    if _is_number(x) and abs(x) <= _FLOAT_MAX and math.isfinite(x):  # a huge int overflows isfinite
        return str(x)
    raise _fail(where, f"expected a string or a number, got {_show(x)} (quote it to pass it literally)")


def _parse_options(where: str, data: Mapping[str, Any]) -> Options:
    timeout = data.get("timeout")
    if timeout is not None and (_number(_join(where, "timeout"), timeout) <= 0):
        raise _fail(_join(where, "timeout"), f"must be > 0 seconds or null, got {timeout}")
    retries = _int(_join(where, "retries"), _or(data.get("retries"), 0), minimum=0)
    backoff = _number(_join(where, "backoff"), _or(data.get("backoff"), 1.0))
    if backoff < 0:
        raise _fail(_join(where, "backoff"), f"must be >= 0 seconds, got {backoff}")
    chunk = data.get("chunk", "auto")
    if chunk not in ("auto", None) and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise _fail(_join(where, "chunk"), f"expected 'auto' or a number of points >= 1, got {_show(chunk)}")
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
            raise _fail(where, f"an integer of {len(s)} digits is too long")
        return int(s)
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", s, re.IGNORECASE):
        return _scalar(where, float(s))
    return s


def _parse_rows(where: str, data: Any, base_dir: Path) -> RowsAxis:
    where = _join(where, "rows")
    data = _mapping(where, data)
    _check_keys(where, data, ("file", "columns"))
    if not isinstance(data.get("file"), str):
        raise _fail(_join(where, "file"), "expected the path of a CSV file (relative to the sweep file)")
    path = base_dir / data["file"]
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _fail(
            _join(where, "file"), f"cannot read {path}: {getattr(e, 'strerror', None) or e}"
        ) from None
    if len(table) < 2:
        raise _fail(_join(where, "file"), f"{path} is empty: it needs a header line and at least one row")
    header = [h.strip() for h in table[0]]
    wanted = data.get("columns")
    if wanted is None:
        wanted = header
    elif not isinstance(wanted, list) or not wanted or not all(isinstance(c, str) for c in wanted):
        raise _fail(
            _join(where, "columns"), f"expected a non-empty list of column names, got {_show(wanted)}"
        )
    for c in wanted:
        if c not in header:
            raise _fail(
                _join(where, "columns"), f"unknown column '{c}' in {path}; columns: {', '.join(header)}"
            )
        _param_name(f"{path}: column '{c}'", c)
    twice = sorted({c for c in wanted if wanted.count(c) > 1})
    if twice:
        key = "columns" if "columns" in data else "file"
        raise _fail(_join(where, key), f"column '{twice[0]}' appears twice")
    pos = [header.index(c) for c in wanted]
    rows = []
    for n, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise _fail(f"{path}: line {n}", f"{len(row)} cells, but the header has {len(header)}")
        rows.append(tuple(_cell(f"{path}: line {n}, column '{header[p]}'", row[p]) for p in pos))
    return RowsAxis(tuple(wanted), tuple(rows))


def _parse_samples(where: str, data: Any) -> SamplesAxis:
    where = _join(where, "samples")
    data = _mapping(where, data)
    _check_keys(where, data, ("n", "seed", "params"))
    n = _int(_join(where, "n"), data.get("n"), minimum=1)
    seed = _int(_join(where, "seed"), data.get("seed", 0))
    params = _mapping(_join(where, "params"), data.get("params"))
    if not params:
        raise _fail(_join(where, "params"), "empty: give at least one sampled param")
    pw = _join(where, "params")
    dists = tuple(
        _distribution(_join(pw, str(k)), _param_name(_join(pw, str(k)), k), v) for k, v in params.items()
    )
    return SamplesAxis(n, seed, dists)


def _parse_repeat(where: str, data: Any) -> RepeatAxis:
    where = _join(where, "repeat")
    if isinstance(data, Mapping):
        _check_keys(where, data, ("n", "seed"))
        seed = data.get("seed")
        return RepeatAxis(
            _int(_join(where, "n"), data.get("n"), minimum=1),
            None if seed is None else _int(_join(where, "seed"), seed),
        )
    if not isinstance(data, int) or isinstance(data, bool) or data < 1:
        raise _fail(where, f"expected a count >= 1 or {{n: ..., seed: ...}}, got {_show(data)}")
    return RepeatAxis(data)


# -------------------------------------------------------------------------------------------- overrides


def _parse_override(raw: str) -> tuple[str, str, Any, bool]:
    """`name=values` (`+name=values` adds a param) -> (name, where, param spec, adds)."""
    import yaml  # here, not at the top: a worker, which reads no sweep file, never loads it

    from swarmrun.definition.yamlload import load as _yaml

    where = f"-p {raw}"
    adds = raw.startswith("+")
    name, eq, text = raw.removeprefix("+").partition("=")
    name, text = name.strip(), text.strip()
    if not eq or not name or not text:
        raise _fail(where, "expected name=values, e.g. alpha=0.1,0.2 or n=range(1,10)")
    _param_name(where, name)
    fn = _OVERRIDE_FN.match(text)
    if fn is None and re.match(r"(range|linspace|logspace)\s*\(", text):
        raise _fail(where, "expected a closed call like range(1,10), linspace(0,1,5) or logspace(-3,0,4)")
    try:
        if text[0] in "[{":
            spec = _yaml(text)
        elif fn:
            spec = {fn[1]: [_yaml(a) for a in fn[2].split(",")]} if fn[2].strip() else {fn[1]: []}
        else:
            spec = [_yaml(v) for v in text.split(",")]
            spec = spec[0] if len(spec) == 1 else spec
    except yaml.YAMLError as e:
        raise _fail(where, f"cannot parse the values: {str(e).splitlines()[0]}") from None
    except (ValueError, RecursionError) as e:  # an integer past the 4300-digit limit; deep nesting
        raise _fail(where, f"cannot parse the values: {str(e).split(';')[0] or type(e).__name__}") from None
    return name, where, spec, adds


# ------------------------------------------------------------------------------------------------- top


def parse_sweep(
    data: Mapping[str, Any],
    *,
    source: str = "sweep",
    base_dir: Path | None = None,
    overrides: Sequence[str] = (),
) -> Sweep:
    """Validate a loaded sweep file (and `-p` overrides) into a Sweep; SweepFileError names key and why."""
    if not isinstance(data, Mapping):
        raise _fail(source, f"expected a mapping with at least a task, got {_show(data)}")
    _check_depth(source, data)
    _check_keys(source, data, TOP_KEYS)
    base = base_dir if base_dir is not None else Path.cwd()
    name = _or(data.get("name"), Path(source).stem or "sweep")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise _fail(_join(source, "name"), f"expected a non-empty one-line string, got {_show(name)}")

    owners: dict[str, str] = {}  # param name -> where it is defined, to report duplicates

    def own(where: str, names: Sequence[str]) -> None:
        for n in names:
            if n in owners:
                raise _fail(where, f"param '{n}' is defined twice (also in {owners[n]})")
            owners[n] = where

    params_where = _join(source, "params")
    raw_params = dict(_mapping(params_where, _or(data.get("params"), {})))
    entries = {k: (_join(params_where, str(k)), v) for k, v in raw_params.items()}
    groups = _zip_groups(_join(source, "zip"), _or(data.get("zip"), []), list(entries))
    tail: list[Axis] = []
    if data.get("rows") is not None:
        tail.append(_parse_rows(source, data["rows"], base))
    if data.get("samples") is not None:
        tail.append(_parse_samples(source, data["samples"]))
    if data.get("repeat") is not None:
        tail.append(_parse_repeat(source, data["repeat"]))
    sections = {n: next(iter(a.to_dict())) for a in tail for n in a.names}

    for raw in overrides:
        oname, owhere, spec, adds = _parse_override(raw)
        known = [*entries, *(n for n in sections if n not in entries)]
        if adds and oname in known:
            raise _fail(owhere, f"'{oname}' is a param of this sweep already; write {raw[1:]} to change it")
        if not adds and oname not in known:
            close = difflib.get_close_matches(oname, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise _fail(
                owhere,
                f"'{oname}' is not a param of this sweep (its params: {', '.join(known) or 'none'}); "
                f"{hint}write +{raw} to add one",
            )
        if any(oname in g for g in groups):
            raise _fail(
                owhere, f"'{oname}' is zipped with other params; edit the zip group in the sweep file"
            )
        if oname in sections:
            raise _fail(owhere, f"'{oname}' comes from {sections[oname]}, which -p cannot override")
        entries[oname] = (owhere, spec)  # in place when it exists, appended when added

    axes: list[Axis] = []
    singles = {n: _param_axis(w, _param_name(w, n), spec) for n, (w, spec) in entries.items()}
    zipped = {g[0]: g for g in groups}
    members = {m for g in groups for m in g}
    for n in entries:
        if n in zipped:
            group, gwhere = zipped[n], f"{_join(source, 'zip')}[{groups.index(zipped[n])}]"
            sizes = {m: singles[m].size for m in group}
            if len(set(sizes.values())) > 1:
                raise _fail(
                    gwhere, "members have unequal lengths: " + ", ".join(f"{m}={s}" for m, s in sizes.items())
                )
            axes.append(ZipAxis(tuple(singles[m] for m in group)))
        elif n not in members:
            axes.append(singles[n])
    for axis in axes:
        own(params_where, axis.names)
    for axis in tail:
        own(_join(source, next(iter(axis.to_dict()))), axis.names)
    axes.extend(tail)

    task = _parse_task(source, data.get("task"), list(owners))
    return _bounded(source, Sweep(name.strip(), task, tuple(axes), _parse_options(source, data)))


def _bounded(where: str, sweep: Sweep) -> Sweep:
    """`sweep`, unless it has more than MAX_POINTS points (its size is a product: nothing is expanded)."""
    if sweep.size > MAX_POINTS:
        size = f"{sweep.size:,}" if sweep.size < 10**24 else f"about 10^{len(str(sweep.size)) - 1}"
        raise _fail(where, f"{size} points is more than a sweep may have ({MAX_POINTS:,})")
    return sweep


def _check_depth(where: str, data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _fail(where, f"nested too deeply (a sweep file needs at most {MAX_DEPTH} levels)")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def _zip_groups(where: str, data: Any, params: list[str]) -> list[tuple[str, ...]]:
    """Zip groups with members in `params` order, so a group stands where its first member does."""
    if not isinstance(data, list):
        raise _fail(where, f"expected a list of groups like [[x, y]], got {_show(data)}")
    groups, used = [], set()
    for k, group in enumerate(data):
        gw = f"{where}[{k}]"
        if not isinstance(group, list) or len(group) < 2:
            raise _fail(gw, f"a group is a list of two or more params, like [x, y]; got {_show(group)}")
        for m in group:
            if m not in params:
                close = difflib.get_close_matches(str(m), params, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise _fail(gw, f"'{m}' is not a param listed under params{hint}")
            if m in used:
                raise _fail(gw, f"'{m}' is already zipped")
            used.add(m)
        groups.append(tuple(sorted(group, key=params.index)))
    return groups


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read a sweep file (.toml and .json by extension, YAML otherwise) and parse it."""
    import tomllib

    import yaml

    from swarmrun.definition.yamlload import load as _yaml

    path = Path(path)
    source = str(path)

    def json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            raise _fail(source, f"duplicate key in JSON object {{{', '.join(k for k, _ in pairs)}}}")
        return obj

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(source, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=json_object)
        else:
            data = _yaml(text)
    except tomllib.TOMLDecodeError as e:
        raise _fail(source, f"TOML syntax error: {e}") from None
    except json.JSONDecodeError as e:
        raise _fail(f"{source}: line {e.lineno}", f"JSON syntax error: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        why = getattr(e, "problem", None) or str(e)
        raise _fail(source + (f": line {mark.line + 1}" if mark else ""), f"YAML error: {why}") from None
    except RecursionError:
        raise _fail(source, f"nested too deeply (a sweep file needs at most {MAX_DEPTH} levels)") from None
    except ValueError as e:  # an integer past Python's 4300-digit conversion limit
        raise _fail(source, f"cannot read a value: {str(e).split(';')[0]}") from None
    if data is None:
        raise _fail(source, "empty file; a sweep needs at least a task")
    return parse_sweep(data, source=source, base_dir=path.parent, overrides=overrides)


def sweep_from_dict(d: Mapping[str, Any]) -> Sweep:
    """Rebuild a sweep from `to_dict()` output (also after a JSON round trip)."""
    where = "sweep spec"
    d = _mapping(where, d)
    if d.get("format") != FORMAT:
        raise _fail(where, f"unsupported format {d.get('format')!r}; expected {FORMAT}")
    _check_keys(where, d, ("format", "name", "task", "axes", "options"))
    try:
        task = _parse_task(where, d.get("task"), None)
        axes = tuple(_axis_from_dict(f"{where}: axes[{n}]", a) for n, a in enumerate(d.get("axes", ())))
        options = _parse_options(where, d.get("options") or {})
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise _fail(where, f"malformed ({type(e).__name__}: {e})") from None
    seen: set[str] = set()
    for n, axis in enumerate(axes):
        if isinstance(axis, ZipAxis) and len({m.size for m in axis.members}) != 1:
            raise _fail(f"{where}: axes[{n}]", "zip members must be non-empty and of equal lengths")
        if seen & set(axis.names) or len(set(axis.names)) < len(axis.names):
            raise _fail(f"{where}: axes[{n}]", f"a param of {list(axis.names)} is defined twice")
        seen.update(axis.names)
    return _bounded(where, Sweep(str(d.get("name", "sweep")), task, axes, options))
