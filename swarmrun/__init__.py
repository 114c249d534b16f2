"""swarmrun: run research parameter sweeps on Docker Swarm through a Redis queue."""

from __future__ import annotations

__version__ = "0.1.0"
