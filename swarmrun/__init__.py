"""swarmrun: run research parameter sweeps on Docker Swarm through a Redis queue.

`import swarmrun` gives the Python API: `run`, `submit`, `results` and `Results` (swarmrun/api.py).
Its modules are the ones every command loads anyway; pandas and pyarrow load only when asked for.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The API's `results` function shadows the `swarmrun.results` module as an attribute of the
# package: importing the API loads that module first, so this name is the function for good.
from swarmrun.api import Results, results, run, submit  # noqa: E402

__all__ = ["Results", "__version__", "results", "run", "submit"]
