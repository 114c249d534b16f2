"""Axes: how a sweep's params vary. Each axis maps an index `k` in `[0, size)` to values, lazily.

Pure: point `i` of a sweep is the mixed-radix decoding of `i` over its axes (see `sweep.Sweep`),
so any process computes any point from the canonical spec alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class Axis:
    """One dimension of the grid: `size` values, each assigning one or more params."""

    @property
    def names(self) -> tuple[str, ...]:
        """The params this axis assigns, in order."""
        raise NotImplementedError

    @property
    def size(self) -> int:
        """The number of values along this axis."""
        raise NotImplementedError

    def fill(self, k: int, out: dict[str, Any]) -> None:
        """Write this axis's params for its `k`-th value into `out`."""
        raise NotImplementedError

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        """Each param's values (in `names` order) at the axis values `ks`: `fill` by column."""
        filled = []
        for k in ks:
            out: dict[str, Any] = {}
            self.fill(k, out)
            filled.append(out)
        return [[out[name] for out in filled] for name in self.names]

    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-able form of this axis."""
        raise NotImplementedError


class ParamAxis(Axis):
    """An axis of one param; `value(k)` is its k-th value."""

    name: str

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def value(self, k: int) -> Any:
        raise NotImplementedError

    def fill(self, k: int, out: dict[str, Any]) -> None:
        out[self.name] = self.value(k)

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        return [list(map(self.value, ks))]


@dataclass(frozen=True)
class ValuesAxis(ParamAxis):
    """An explicit list of values (a scalar in the file is a list of one)."""

    name: str
    values: tuple[Any, ...]

    @property
    def size(self) -> int:
        return len(self.values)

    def value(self, k: int) -> Any:
        return self.values[k]

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        return [list(map(self.values.__getitem__, ks))]

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.name, "values": list(self.values)}


def _lin(start: float, stop: float, count: int, k: int) -> float:
    """Value k of linspace(start, stop, count): exactly `stop` last, `start` when count is 1."""
    if k == 0:
        return start
    if k == count - 1:
        return stop
    return start + (stop - start) * k / (count - 1)


@dataclass(frozen=True)
class LinspaceAxis(ParamAxis):
    """`count` evenly spaced floats from `start` to `stop`, both included (like numpy.linspace)."""

    name: str
    start: float
    stop: float
    count: int

    @property
    def size(self) -> int:
        return self.count

    def value(self, k: int) -> float:
        return _lin(self.start, self.stop, self.count, k)

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.name, "linspace": [self.start, self.stop, self.count]}


@dataclass(frozen=True)
class LogspaceAxis(ParamAxis):
    """`base ** x` for `count` exponents `x` evenly spaced from `start` to `stop` (like numpy.logspace)."""

    name: str
    start: float
    stop: float
    count: int
    base: float

    @property
    def size(self) -> int:
        return self.count

    def value(self, k: int) -> float:
        return float(self.base ** _lin(self.start, self.stop, self.count, k))

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.name, "logspace": [self.start, self.stop, self.count, self.base]}


@dataclass(frozen=True)
class RangeAxis(ParamAxis):
    """The integers of Python's `range(start, stop, step)`."""

    name: str
    start: int
    stop: int
    step: int

    @property
    def size(self) -> int:
        if self.step > 0:
            return max(0, (self.stop - self.start + self.step - 1) // self.step)
        return max(0, (self.start - self.stop - self.step - 1) // -self.step)

    def value(self, k: int) -> int:
        return self.start + k * self.step

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        if isinstance(ks, range) and ks.step == 1:
            return [list(range(self.value(ks.start), self.value(ks.stop), self.step))]
        return [[self.start + k * self.step for k in ks]]

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.name, "range": [self.start, self.stop, self.step]}


@dataclass(frozen=True)
class ZipAxis(Axis):
    """Params varied together: the k-th value of each member."""

    members: tuple[ParamAxis, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    @property
    def size(self) -> int:
        return self.members[0].size

    def fill(self, k: int, out: dict[str, Any]) -> None:
        for m in self.members:
            out[m.name] = m.value(k)

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        return [column for m in self.members for column in m.column_values(ks)]

    def to_dict(self) -> dict[str, Any]:
        return {"zip": [m.to_dict() for m in self.members]}


@dataclass(frozen=True)
class RowsAxis(Axis):
    """Rows of a table (read from a CSV once, then embedded in the spec); columns are params."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.columns

    @property
    def size(self) -> int:
        return len(self.rows)

    def fill(self, k: int, out: dict[str, Any]) -> None:
        out.update(zip(self.columns, self.rows[k], strict=False))

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        width = len(self.columns)
        if ks and all(len(row) == width for row in self.rows):
            picked = list(map(self.rows.__getitem__, ks))
            return [list(column) for column in zip(*picked, strict=True)]
        return super().column_values(ks)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": {"columns": list(self.columns), "values": [list(r) for r in self.rows]}}


def _unit(text: str) -> float:
    """A uniform float in [0, 1): the top 53 bits of SHA-256(text), the same in every process."""
    return (int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 11) * 2.0**-53


@dataclass(frozen=True)
class Distribution:
    """How one sampled param draws its value: `kind` is one of `sections.DISTRIBUTIONS`."""

    name: str
    kind: str
    args: tuple[Any, ...]

    def draw(self, seed: int, k: int) -> Any:
        u = _unit(f"{seed}:{k}:{self.name}")
        a = self.args
        if self.kind == "uniform":
            return a[0] + (a[1] - a[0]) * u
        if self.kind == "loguniform":
            return math.exp(math.log(a[0]) + (math.log(a[1]) - math.log(a[0])) * u)
        if self.kind == "int":
            return a[0] + min(int(u * (a[1] - a[0] + 1)), a[1] - a[0])
        if self.kind == "choice":
            return a[min(int(u * len(a)), len(a) - 1)]
        u2 = _unit(f"{seed}:{k}:{self.name}:2")  # normal: Box-Muller on two independent uniforms
        return a[0] + a[1] * math.sqrt(-2.0 * math.log(1.0 - u)) * math.cos(2.0 * math.pi * u2)

    def to_dict(self) -> dict[str, Any]:
        return {"param": self.name, self.kind: list(self.args)}


@dataclass(frozen=True)
class SamplesAxis(Axis):
    """`n` seeded random samples; sample k of param p depends only on (seed, k, p)."""

    n: int
    seed: int
    dists: tuple[Distribution, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dists)

    @property
    def size(self) -> int:
        return self.n

    def fill(self, k: int, out: dict[str, Any]) -> None:
        for d in self.dists:
            out[d.name] = d.draw(self.seed, k)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": {"n": self.n, "seed": self.seed, "params": [d.to_dict() for d in self.dists]}}


def repeat_seed(seed: int, k: int) -> int:
    """The 31-bit seed of repeat `k` under `repeat: {seed: ...}`: the first 4 bytes of a SHA-256, halved."""
    return int.from_bytes(hashlib.sha256(f"{seed}:repeat:{k}".encode()).digest()[:4], "big") >> 1


@dataclass(frozen=True)
class RepeatAxis(Axis):
    """The innermost axis: param `repeat` = 0..n-1, and `seed` derived per repeat when a seed is given."""

    n: int
    seed: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return ("repeat",) if self.seed is None else ("repeat", "seed")

    @property
    def size(self) -> int:
        return self.n

    def fill(self, k: int, out: dict[str, Any]) -> None:
        out["repeat"] = k
        if self.seed is not None:
            out["seed"] = repeat_seed(self.seed, k)

    def column_values(self, ks: Sequence[int]) -> list[list[Any]]:
        repeats = list(ks)
        return [repeats] if self.seed is None else [repeats, [repeat_seed(self.seed, k) for k in repeats]]

    def to_dict(self) -> dict[str, Any]:
        return {"repeat": {"n": self.n} if self.seed is None else {"n": self.n, "seed": self.seed}}
