"""The `swarmrun` command: parse, call the library, print. Errors become one line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click
import redis

from swarmrun.cli.common import cli
from swarmrun.cli.records import register as register_record_commands
from swarmrun.cli.stack import register as register_stack_commands
from swarmrun.cli.sweeps import register as register_sweep_commands
from swarmrun.errors import ExitCode, SwarmrunError

register_sweep_commands(cli)
register_record_commands(cli)
register_stack_commands(cli)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _is_docker_error(e: Exception) -> bool:
    # The docker SDK is imported only by the commands that use it (`swarmrun worker` never does).
    errors = sys.modules.get("docker.errors")
    return errors is not None and isinstance(e, errors.DockerException)


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
    except redis.RedisError as e:
        if debug:
            raise
        _fail(f"Redis failed: {e}", ExitCode.REDIS_UNAVAILABLE)
    except Exception as e:
        if debug:
            raise
        if _is_docker_error(e):
            _fail(f"Docker failed: {e}", ExitCode.DOCKER_UNAVAILABLE)
        _fail(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)", ExitCode.ERROR)
    sys.exit(code or 0)
