"""Where workers run: `local` (processes on this machine) or `swarm` (a Docker Swarm service).

Both answer the same small interface, so the CLI does not care which one it drives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Placement:
    """How many workers run on one node (or this machine), and how many are wanted there."""

    node: str
    running: int


@dataclass(frozen=True)
class Replicas:
    running: int
    desired: int
    placements: tuple[Placement, ...] = ()


class Backend(Protocol):
    name: str

    def deploy(self, replicas: int) -> None:
        """Start workers (idempotent: an existing deployment is scaled instead)."""

    def scale(self, replicas: int, *, wait: bool = True) -> Replicas:
        """Set the worker count; scale-down stops workers warm (they finish their chunk)."""

    def replicas(self) -> Replicas:
        """Running and desired workers, per node."""

    def logs(self, *, follow: bool = False, tail: int = 100) -> Iterator[str]:
        """Worker log lines."""

    def remove(self) -> None:
        """Stop every worker and remove what deploy made."""
