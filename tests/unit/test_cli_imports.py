"""The CLI loads the library behind a command only when that command runs.

`swarmrun worker` starts once per replica, 20 at once on a scale-up; the docker SDK is about half
of the CLI's import time, so a worker must not pay for it. `swarmrun --help` loads neither RQ nor
redis-py (whose asyncio alone is about 100 ms), and `import swarmrun` leaves the API for its first use.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(argv: list[str], roots: tuple[str, ...] = ("docker", "requests")) -> set[str]:
    code = (
        "import sys\n"
        "from swarmrun.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"engine = [m for m in sys.modules if m.split('.')[0] in {roots!r}]\n"
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


LIBRARY = ("rq", "redis", "asyncio", "docker", "requests", "swarmrun.api", "swarmrun.execution")


def _loaded(argv: list[str]) -> set[str]:
    found = _modules_after(argv, ("rq", "redis", "asyncio", "docker", "requests", "swarmrun"))
    return {m for m in found if m.startswith(LIBRARY)}


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_loads_no_library(argv: list[str]) -> None:
    assert _loaded(argv) == set()


def test_worker_loads_neither_run_nor_the_api_nor_yaml() -> None:
    """What `swarmrun worker` imports before it serves: the CLI, its command and the worker module."""
    code = (
        "import sys\n"
        "import swarmrun.cli, swarmrun.cli.worker, swarmrun.execution.worker\n"
        "print(*sorted(m for m in sys.modules if m.split('.')[0] in ('swarmrun', 'yaml', 'tomllib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    found = set(out.split())
    assert "swarmrun.execution.worker" in found
    unwanted = {"swarmrun.cli.sweeps", "swarmrun.api", "swarmrun.cli.autoscale", "yaml", "tomllib"}
    assert found & unwanted == set()


def test_every_command_is_listed_without_importing_it() -> None:
    from swarmrun.cli.common import COMMANDS, LAZY_HELP

    assert set(COMMANDS) == set(LAZY_HELP)


def test_import_swarmrun_gives_the_api_on_first_use() -> None:
    code = (
        "import sys, swarmrun\n"
        "before = 'swarmrun.api' in sys.modules\n"
        "from swarmrun import run, results, Results, submit\n"
        "print(before, callable(run) and callable(results) and callable(submit), Results.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "Results"]


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    import swarmrun

    with pytest.raises(AttributeError):
        swarmrun.nothing_here  # noqa: B018
