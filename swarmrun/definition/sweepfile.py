"""Sweep files: read YAML/TOML/JSON specs and the `-p name=values` override language into a Sweep.

The sections themselves are validated in `sections`; here the file formats are read (duplicate
keys refused, nesting bounded), `-p` overrides change or add params, and the sweep is assembled
and bounded in size. Every error names the key and why (`SweepFileError`). Pure apart from reading
the sweep file. `sweep_from_dict` rebuilds a sweep from its canonical dict (as stored in Redis).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swarmrun.definition.axes import Axis, ZipAxis
from swarmrun.definition.checks import check_keys, fail, join_key, mapping, or_default, show
from swarmrun.definition.sections import (
    axis_from_dict,
    param_axis,
    param_name,
    parse_options,
    parse_repeat,
    parse_rows,
    parse_samples,
    parse_task,
    zip_groups,
)
from swarmrun.definition.sweep import FORMAT, MAX_POINTS, Sweep
from swarmrun.errors import SweepFileError
from swarmrun.execution.outputs import OUTPUT_KEYS

OPTION_KEYS = ("timeout", "retries", "backoff", "chunk", *OUTPUT_KEYS)
AXIS_KEYS = ("params", "zip", "rows", "samples", "repeat")
TOP_KEYS = ("name", "task", *OPTION_KEYS, *AXIS_KEYS)
MAX_DEPTH = 32  # levels of nesting in a sweep file; a real one has at most about six
_OVERRIDE_FN = re.compile(r"(range|linspace|logspace)\((.*)\)\Z", re.DOTALL)

# ------------------------------------------------------------------------- YAML and the -p language


def _parse_override(raw: str) -> tuple[str, str, Any, bool]:
    """`name=values` (`+name=values` adds a param) -> (name, where, param spec, adds)."""
    import yaml  # here, not at the top: a worker, which reads no sweep file, never loads it

    from swarmrun.definition.yamlload import load as _yaml

    where = f"-p {raw}"
    adds = raw.startswith("+")
    name, eq, text = raw.removeprefix("+").partition("=")
    name, text = name.strip(), text.strip()
    if not eq or not name or not text:
        raise fail(where, "expected name=values, e.g. alpha=0.1,0.2 or n=range(1,10)")
    param_name(where, name)
    fn = _OVERRIDE_FN.match(text)
    if fn is None and re.match(r"(range|linspace|logspace)\s*\(", text):
        raise fail(where, "expected a closed call like range(1,10), linspace(0,1,5) or logspace(-3,0,4)")
    try:
        if text[0] in "[{":
            spec = _yaml(text)
        elif fn:
            spec = {fn[1]: [_yaml(a) for a in fn[2].split(",")]} if fn[2].strip() else {fn[1]: []}
        else:
            spec = [_yaml(v) for v in text.split(",")]
            spec = spec[0] if len(spec) == 1 else spec
    except yaml.YAMLError as e:
        raise fail(where, f"cannot parse the values: {str(e).splitlines()[0]}") from None
    except (ValueError, RecursionError) as e:  # an integer past the 4300-digit limit; deep nesting
        raise fail(where, f"cannot parse the values: {str(e).split(';')[0] or type(e).__name__}") from None
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
        raise fail(source, f"expected a mapping with at least a task, got {show(data)}")
    _check_depth(source, data)
    check_keys(source, data, TOP_KEYS)
    base = base_dir if base_dir is not None else Path.cwd()
    name = or_default(data.get("name"), Path(source).stem or "sweep")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise fail(join_key(source, "name"), f"expected a non-empty one-line string, got {show(name)}")

    owners: dict[str, str] = {}  # param name -> where it is defined, to report duplicates

    def own(where: str, names: Sequence[str]) -> None:
        for n in names:
            if n in owners:
                raise fail(where, f"param '{n}' is defined twice (also in {owners[n]})")
            owners[n] = where

    params_where = join_key(source, "params")
    raw_params = dict(mapping(params_where, or_default(data.get("params"), {})))
    entries = {k: (join_key(params_where, str(k)), v) for k, v in raw_params.items()}
    groups = zip_groups(join_key(source, "zip"), or_default(data.get("zip"), []), list(entries))
    tail: list[Axis] = []
    if data.get("rows") is not None:
        tail.append(parse_rows(source, data["rows"], base))
    if data.get("samples") is not None:
        tail.append(parse_samples(source, data["samples"]))
    if data.get("repeat") is not None:
        tail.append(parse_repeat(source, data["repeat"]))
    sections = {n: next(iter(a.to_dict())) for a in tail for n in a.names}

    for raw in overrides:
        oname, owhere, spec, adds = _parse_override(raw)
        known = [*entries, *(n for n in sections if n not in entries)]
        if adds and oname in known:
            raise fail(owhere, f"'{oname}' is a param of this sweep already; write {raw[1:]} to change it")
        if not adds and oname not in known:
            close = difflib.get_close_matches(oname, known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise fail(
                owhere,
                f"'{oname}' is not a param of this sweep (its params: {', '.join(known) or 'none'}); "
                f"{hint}write +{raw} to add one",
            )
        if any(oname in g for g in groups):
            raise fail(owhere, f"'{oname}' is zipped with other params; edit the zip group in the sweep file")
        if oname in sections:
            raise fail(owhere, f"'{oname}' comes from {sections[oname]}, which -p cannot override")
        entries[oname] = (owhere, spec)  # in place when it exists, appended when added

    axes: list[Axis] = []
    singles = {n: param_axis(w, param_name(w, n), spec) for n, (w, spec) in entries.items()}
    zipped = {g[0]: g for g in groups}
    members = {m for g in groups for m in g}
    for n in entries:
        if n in zipped:
            group, gwhere = zipped[n], f"{join_key(source, 'zip')}[{groups.index(zipped[n])}]"
            sizes = {m: singles[m].size for m in group}
            if len(set(sizes.values())) > 1:
                raise fail(
                    gwhere, "members have unequal lengths: " + ", ".join(f"{m}={s}" for m, s in sizes.items())
                )
            axes.append(ZipAxis(tuple(singles[m] for m in group)))
        elif n not in members:
            axes.append(singles[n])
    for axis in axes:
        own(params_where, axis.names)
    for axis in tail:
        own(join_key(source, next(iter(axis.to_dict()))), axis.names)
    axes.extend(tail)

    task = parse_task(source, data.get("task"), list(owners))
    return _bounded(source, Sweep(name.strip(), task, tuple(axes), parse_options(source, data)))


def _bounded(where: str, sweep: Sweep) -> Sweep:
    """`sweep`, unless it has more than MAX_POINTS points (its size is a product: nothing is expanded)."""
    if sweep.size > MAX_POINTS:
        size = f"{sweep.size:,}" if sweep.size < 10**24 else f"about 10^{len(str(sweep.size)) - 1}"
        raise fail(where, f"{size} points is more than a sweep may have ({MAX_POINTS:,})")
    return sweep


def _too_deep(where: str) -> SweepFileError:
    """The error for nesting past MAX_DEPTH, seen by the check or as a parser's RecursionError."""
    return fail(where, f"nested too deeply (a sweep file needs at most {MAX_DEPTH} levels)")


def _check_depth(where: str, data: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(where)
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


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
            raise fail(source, f"duplicate key in JSON object {{{', '.join(k for k, _ in pairs)}}}")
        return obj

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise fail(source, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=json_object)
        else:
            data = _yaml(text)
    except tomllib.TOMLDecodeError as e:
        raise fail(source, f"TOML syntax error: {e}") from None
    except json.JSONDecodeError as e:
        raise fail(f"{source}: line {e.lineno}", f"JSON syntax error: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        why = getattr(e, "problem", None) or str(e)
        raise fail(source + (f": line {mark.line + 1}" if mark else ""), f"YAML error: {why}") from None
    except RecursionError:
        raise _too_deep(source) from None
    except ValueError as e:  # an integer past Python's 4300-digit conversion limit
        raise fail(source, f"cannot read a value: {str(e).split(';')[0]}") from None
    if data is None:
        raise fail(source, "empty file; a sweep needs at least a task")
    return parse_sweep(data, source=source, base_dir=path.parent, overrides=overrides)


def sweep_from_dict(d: Mapping[str, Any]) -> Sweep:
    """Rebuild a sweep from `to_dict()` output (also after a JSON round trip)."""
    where = "sweep spec"
    d = mapping(where, d)
    if d.get("format") != FORMAT:
        raise fail(where, f"unsupported format {d.get('format')!r}; expected {FORMAT}")
    check_keys(where, d, ("format", "name", "task", "axes", "options"))
    try:
        task = parse_task(where, d.get("task"), None)
        axes = tuple(axis_from_dict(f"{where}: axes[{n}]", a) for n, a in enumerate(d.get("axes", ())))
        options = parse_options(where, d.get("options") or {})
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise fail(where, f"malformed ({type(e).__name__}: {e})") from None
    seen: set[str] = set()
    for n, axis in enumerate(axes):
        if isinstance(axis, ZipAxis) and len({m.size for m in axis.members}) != 1:
            raise fail(f"{where}: axes[{n}]", "zip members must be non-empty and of equal lengths")
        if seen & set(axis.names) or len(set(axis.names)) < len(axis.names):
            raise fail(f"{where}: axes[{n}]", f"a param of {list(axis.names)} is defined twice")
        seen.update(axis.names)
    return _bounded(where, Sweep(str(d.get("name", "sweep")), task, axes, options))
