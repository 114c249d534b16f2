"""Point functions every benchmarked engine runs (importable by dotted path, also inside the image)."""

from __future__ import annotations

import time


def noop(**params: object) -> None:
    """A point that does nothing: measures pure per-point overhead."""
    return None


def spin(ms: float, **params: object) -> float:
    """Busy CPU for `ms` milliseconds (a compute-bound point)."""
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    return ms


def sleep(ms: float, **params: object) -> float:
    """Sleep `ms` milliseconds (a point waiting on something else, using no CPU)."""
    time.sleep(ms / 1000.0)
    return ms


def call(fn: str, params: dict[str, object]) -> object:
    """Run `fn` (a name in this module) on `params`: the one job function raw RQ and Pool run."""
    return globals()[fn](**params)
