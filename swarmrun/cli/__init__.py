"""The `swarmrun` command: parse, call the library, print. Errors become one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from swarmrun.cli.common import cli
from swarmrun.errors import ExitCode, SwarmrunError


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _raised_by(e: Exception, module: str, name: str) -> bool:
    """Whether `e` is a `module.name`: the library is imported only by the commands that use it
    (`--help` loads neither redis-py nor the docker SDK), so an exception from it means it is loaded."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(e, getattr(loaded, name))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the command, map every failure to one line and a documented exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SWARMRUN_DEBUG") == "1"
    try:
        code = cli.main(args=args, prog_name="swarmrun", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("\nInterrupted.", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SwarmrunError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except Exception as e:
        if debug:
            raise
        if _raised_by(e, "redis.exceptions", "RedisError"):
            _fail(f"Redis failed: {e}", ExitCode.REDIS_UNAVAILABLE)
        if _raised_by(e, "docker.errors", "DockerException"):
            _fail(f"Docker failed: {e}", ExitCode.DOCKER_UNAVAILABLE)
        _fail(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)", ExitCode.ERROR)
    sys.exit(code or 0)
