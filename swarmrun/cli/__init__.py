"""The `swarmrun` command: parse, call the library, print. Errors become one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from swarmrun.cli.common import cli, exit_now
from swarmrun.errors import ExitCode, SwarmrunError


def _fail(message: str, code: int) -> int:
    click.echo(f"Error: {message}", err=True)
    return code


def _raised_by(e: Exception, module: str, name: str) -> bool:
    """Whether `e` is a `module.name`: the library is imported only by the commands that use it
    (`--help` loads neither redis-py nor the docker SDK), so an exception from it means it is loaded."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(e, getattr(loaded, name))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the command, map every failure to one line and a documented exit code.

    As the `swarmrun` command (no `argv`) it exits without the interpreter's teardown
    (`exit_now`); called with `argv` (tests, in-process) it raises SystemExit."""
    code = _run(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        exit_now(code)
    sys.exit(code)


def _run(args: list[str]) -> int:
    debug = "--debug" in args or os.environ.get("SWARMRUN_DEBUG") == "1"
    try:
        code = cli.main(args=args, prog_name="swarmrun", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        return ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        click.echo("\nInterrupted.", err=True)
        return ExitCode.INTERRUPTED
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:  # a command that exits itself
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except SwarmrunError as e:
        if debug:
            raise
        return _fail(str(e), e.exit_code)
    except Exception as e:
        if debug:
            raise
        if _raised_by(e, "redis.exceptions", "RedisError"):
            return _fail(f"Redis failed: {e}", ExitCode.REDIS_UNAVAILABLE)
        if _raised_by(e, "docker.errors", "DockerException"):
            return _fail(f"Docker failed: {e}", ExitCode.DOCKER_UNAVAILABLE)
        return _fail(
            f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)", ExitCode.ERROR
        )
    return int(code or 0)
