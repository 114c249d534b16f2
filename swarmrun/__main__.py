"""`python -m swarmrun`: the same as the `swarmrun` command."""

from __future__ import annotations

from swarmrun.cli import main

if __name__ == "__main__":
    main()
