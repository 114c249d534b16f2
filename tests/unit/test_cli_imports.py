"""The CLI loads the docker SDK only for commands that talk to an engine.

`swarmrun worker` starts once per replica, 20 at once on a scale-up; the docker SDK is about half
of the CLI's import time, so a worker must not pay for it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from swarmrun.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "engine = [m for m in sys.modules if m.split('.')[0] in ('docker', 'requests')]\n"
        "print('MODULES', *sorted(engine))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.splitlines()[-1].split()[1:])


@pytest.mark.parametrize("argv", [["worker", "--help"], ["run", "--help"], ["ls", "--help"], ["--help"]])
def test_local_commands_do_not_import_docker(argv: list[str]) -> None:
    assert _modules_after(argv) == set()


def test_image_command_is_loaded_when_used() -> None:
    assert "docker" in _modules_after(["image", "--help"])


def test_help_lists_the_lazily_loaded_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "swarmrun", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "  image " in out and "  worker " in out


def test_the_lazy_commands_short_help_is_their_own() -> None:
    from swarmrun.cli.common import LAZY_HELP, cli

    for name in LAZY_HELP:
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        assert command is not None and command.get_short_help_str(1000) == LAZY_HELP[name]
