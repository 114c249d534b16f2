"""swarmrun: run research parameter sweeps on Docker Swarm through a Redis queue.

`import swarmrun` gives the Python API: `run`, `submit`, `results` and `Results` (swarmrun/api.py).
The API (and with it RQ and redis-py) loads on first use of one of these names, not on
`import swarmrun`: every `swarmrun` command imports this package, and `swarmrun --help` needs
none of it. pandas and pyarrow load only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Results", "__version__", "results", "run", "submit"]

if TYPE_CHECKING:
    from swarmrun.api import Results, results, run, submit


def __getattr__(name: str) -> Any:
    if name in ("Results", "results", "run", "submit"):
        from swarmrun import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'swarmrun' has no attribute {name!r}")
