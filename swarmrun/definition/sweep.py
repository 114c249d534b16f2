"""Sweeps: the task, the axes and options, the canonical form and the id; point `i` from the spec.

Pure. Reading sweep files and `-p` overrides is `swarmrun.definition.sweepfile`, validating their
sections `swarmrun.definition.sections`; the axis kinds are `swarmrun.definition.axes`. A sweep is
identified by its task and axes (not its name or options).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from swarmrun.definition.axes import Axis
from swarmrun.execution.outputs import DEFAULT_MAX_OUTPUT_BYTES

FORMAT = 1
BUILTIN_PLACEHOLDERS = ("index", "sweep_id", "outdir")
MAX_POINTS = 10**9  # a sweep keeps one result record per point in Redis: more is a mistake, not a sweep


# Built once: `json.dumps` with options builds an encoder per call (a point key is one per point).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(obj: Any) -> str:
    """The one serialisation hashed for ids: sorted keys, no spaces, ASCII, no NaN."""
    return _CANONICAL.encode(obj)


def _digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def point_key(params: Mapping[str, Any]) -> str:
    """16 hex chars identifying a point's params, the same in every sweep of the same task."""
    return _digest(dict(params))


def point_keys(names: Sequence[str], params: Sequence[Mapping[str, Any]]) -> list[str]:
    """`point_key` of many points whose keys are exactly `names`, at a fraction of the cost.

    The canonical text (what `canonical_json` of each dict writes) is assembled column by column
    from each value's own canonical encoding: ints and finite floats by their `repr` (as the JSON
    encoder does), strings once per distinct value (a grid repeats its axis values).
    """
    order = sorted(names)
    template = "{" + ",".join(canonical_json(n).replace("%", "%%") + ":%s" for n in order) + "}"
    columns = [_encoded([p[n] for p in params]) for n in order]
    sha = hashlib.sha256
    return (
        [sha((template % row).encode()).hexdigest()[:16] for row in zip(*columns, strict=True)]
        if order
        else [_digest({}) for _ in params]
    )


def _encoded(column: list[Any]) -> list[str]:
    """The canonical JSON of each value of one param."""
    kinds = set(map(type, column))
    if kinds == {int}:
        return list(map(int.__repr__, column))
    if kinds == {float} and all(map(math.isfinite, column)):
        return list(map(float.__repr__, column))
    if kinds == {str}:
        distinct = {v: _CANONICAL.encode(v) for v in set(column)}
        return list(map(distinct.__getitem__, column))
    return list(map(_CANONICAL.encode, column))  # bools, None, lists, dicts, mixed; NaN refused


def command_placeholders(arg: str) -> list[str]:
    """The `{field}` names in one command argument; ValueError on syntax a command may not use."""
    try:
        parsed = list(string.Formatter().parse(arg))
    except ValueError as e:
        raise ValueError(f"bad placeholder syntax ({e}); write {{{{ and }}}} for literal braces") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(f"positional placeholder {{{name}}} is not allowed; name a param")
        if "." in name or "[" in name:
            raise ValueError(f"attribute or item access in {{{name}}} is not allowed")
        if conversion not in (None, "s", "r"):
            raise ValueError(f"conversion !{conversion} in {{{name}}} is not allowed; use !s or !r")
        if spec and "{" in spec:
            raise ValueError(f"nested placeholder in the format spec of {{{name}}} is not allowed")
        names.append(name)
    return names


# ------------------------------------------------------------------------------------- task, options


@dataclass(frozen=True)
class TaskSpec:
    """What runs for each point: a Python callable `call` or an argv `command`, plus env and version."""

    call: str | None
    command: tuple[str, ...] | None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    version: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(sorted(self.env.items()))))

    def __hash__(self) -> int:
        return hash(self.key)

    def to_dict(self) -> dict[str, Any]:
        """Canonical and JSON-able; optional parts are left out when unset, so adding one keeps ids."""
        d: dict[str, Any] = (
            {"call": self.call} if self.call is not None else {"command": list(self.command or ())}
        )
        if self.env:
            d["env"] = dict(self.env)
        if self.version is not None:
            d["version"] = self.version
        return d

    @property
    def key(self) -> str:
        """16 hex chars identifying the task (with `point_key`, a cached result)."""
        return _digest(self.to_dict())


@dataclass(frozen=True)
class Options:
    """How points run; not part of the sweep id, so changing them resumes the same sweep."""

    timeout: float | None = None
    retries: int = 0
    backoff: float = 1.0
    chunk: int | None = None  # None: chunk sizes adapt to the measured time per point
    outputs: tuple[str, ...] = ()  # globs relative to the point's directory (swarmrun.execution.outputs)
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES  # per point
    max_sweep_output_bytes: int | None = None
    logs: str = "all"  # all | failed | none (swarmrun.execution.pointlog)
    outputs_dir: str | None = None  # a shared mount: files are moved there, not sent through Redis

    def to_dict(self) -> dict[str, Any]:
        """The four original keys always; output and log keys only when set (older specs read the same)."""
        d: dict[str, Any] = {
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "chunk": self.chunk,
        }
        if self.outputs:
            d["outputs"] = list(self.outputs)
        if self.max_output_bytes != DEFAULT_MAX_OUTPUT_BYTES:
            d["max_output_bytes"] = self.max_output_bytes
        if self.max_sweep_output_bytes is not None:
            d["max_sweep_output_bytes"] = self.max_sweep_output_bytes
        if self.logs != "all":
            d["logs"] = self.logs
        if self.outputs_dir is not None:
            d["outputs_dir"] = self.outputs_dir
        return d


# ----------------------------------------------------------------------------------------------- sweep


@dataclass(frozen=True, eq=False)
class Sweep:
    """A task and its axes; point `i` is the mixed-radix decoding of `i`, the last axis fastest."""

    name: str
    task: TaskSpec
    axes: tuple[Axis, ...]
    options: Options = Options()
    _plan: tuple[tuple[int, int, Callable[[int, dict[str, Any]], None]], ...] = field(
        init=False, repr=False, compare=False
    )
    _size: int = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _id: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        plan, stride = [], 1
        for axis in reversed(self.axes):
            plan.append((stride, axis.size, axis.fill))
            stride *= axis.size
        object.__setattr__(self, "_plan", tuple(reversed(plan)))
        object.__setattr__(self, "_size", stride)
        object.__setattr__(self, "_names", tuple(n for axis in self.axes for n in axis.names))

    def __eq__(self, other: object) -> bool:
        """Equal canonical specs: unlike Python's `==`, `1`, `1.0` and `True` are different values here."""
        if not isinstance(other, Sweep):
            return NotImplemented
        return canonical_json(self.to_dict()) == canonical_json(other.to_dict())

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def size(self) -> int:
        """The number of points: the product of the axis sizes (1 for a sweep without axes)."""
        return self._size

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every param a point assigns, in axis order (the keys of `point(i)`)."""
        return self._names

    def point(self, i: int) -> dict[str, Any]:
        """The params of point `i`, keys in axis order; IndexError outside [0, size)."""
        if not 0 <= i < self._size:
            raise IndexError(f"point {i} is outside [0, {self._size})")
        out: dict[str, Any] = {}
        for stride, size, fill in self._plan:
            fill(i // stride % size, out)
        return out

    def columns(self, start: int, stop: int) -> list[list[Any]]:
        """The params of points `[start, stop)` by column (in `param_names` order): `point(i)[name]`
        for each `i`, computed once per axis value and repeated (list operations, no dict a point).

        Point i's value on an axis is `(i // stride) % size`: in a range it changes every
        `stride` points, so the range holds `runs` runs of equal values.
        """
        if not 0 <= start <= stop <= self._size:
            raise IndexError(f"points [{start}, {stop}) are outside [0, {self._size})")
        n = stop - start
        if n == 0:
            return [[] for _ in self._names]
        out: list[list[Any]] = []
        for (stride, size, _), axis in zip(self._plan, self.axes, strict=True):
            first, last = start // stride, (stop - 1) // stride
            runs, k0 = last - first + 1, first % size
            if k0 + runs <= size:
                values = axis.column_values(range(k0, k0 + runs))
            else:  # the range wraps around the axis: its values, cycled
                reps = (k0 + runs + size - 1) // size
                values = [(column * reps)[k0 : k0 + runs] for column in axis.column_values(range(size))]
            if stride == 1:
                out += values
                continue
            lengths = [stride] * runs
            lengths[0] = min(n, (first + 1) * stride - start)
            if runs > 1:
                lengths[-1] = stop - last * stride
            out += [list(itertools.chain.from_iterable(map(itertools.repeat, v, lengths))) for v in values]
        return out

    def keys_of(self, indices: Iterable[int]) -> list[str]:
        """The point keys (`point_key`) of points `indices`."""
        return point_keys(self._names, [self.point(i) for i in indices])

    def to_dict(self) -> dict[str, Any]:
        """Canonical and JSON-able; workers rebuild the sweep from this alone (CSV rows included)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "task": self.task.to_dict(),
            "axes": [a.to_dict() for a in self.axes],
            "options": self.options.to_dict(),
        }

    @property
    def id(self) -> str:
        """16 hex chars of the task and axes only: renaming or changing options resumes the same sweep."""
        if not self._id:
            spec = {"format": FORMAT, "task": self.task.to_dict(), "axes": [a.to_dict() for a in self.axes]}
            object.__setattr__(self, "_id", _digest(spec))
        return self._id
