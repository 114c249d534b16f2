"""`swarmrun image`: build the worker image (swarmrun + the task code), or a wheelhouse for one."""

from __future__ import annotations

from pathlib import Path

import click

from swarmrun import engine
from swarmrun.cli.common import State
from swarmrun.image import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_TAG,
    build_image,
    make_wheelhouse,
    read_requirements,
    target_interpreter,
)
from swarmrun.settings import Settings

base_image_option = click.option(
    "--base-image", default=DEFAULT_BASE_IMAGE, show_default=True, metavar="IMAGE",
    envvar="SWARMRUN_BASE_IMAGE",
    help="Image to build on; it needs python3 with venv. Env: SWARMRUN_BASE_IMAGE.")
requirements_option = click.option(
    "-r", "--requirements", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Requirements of the task code (default: CONTEXT/requirements.txt if present).")


def _home() -> Path:
    state = click.get_current_context().find_object(State)
    return (state.settings if state else Settings.from_env()).home


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--label")
        labels[key] = val
    return labels


@click.group()
def image() -> None:
    """Build the worker image the swarm backend runs."""


@image.command()
@click.option("--context", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="Directory with the task code; copied to /app in the image.")
@click.option("-t", "--tag", default=DEFAULT_TAG, show_default=True, help="Image name and tag.")
@base_image_option
@requirements_option
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Use this prepared wheelhouse (`swarmrun image wheelhouse`); download nothing.")
@click.option("--dockerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own Dockerfile instead of swarmrun's (same context: wheels/ and app/).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Image label (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="Do not show the build output.")
def build(context: Path, tag: str, base_image: str, requirements: Path | None, wheelhouse: Path | None,
          dockerfile: Path | None, labels: tuple[str, ...], quiet: bool) -> None:
    """Build the worker image from the task code in CONTEXT, offline from a wheelhouse.

    Prints the image id and tag on stdout.
    """
    parsed = _labels(labels)
    client = engine.connect()
    image_id = build_image(client, context=context, tag=tag, base_image=base_image, requirements=requirements,
                           wheelhouse=wheelhouse, dockerfile=dockerfile, labels=parsed, home=_home(),
                           log=None if quiet else lambda line: click.echo(line, err=True))
    click.echo(f"{image_id} {tag}")


@image.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@base_image_option
@click.option("-r", "--requirements", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Requirements of the task code to add.")
def wheelhouse(directory: Path, base_image: str, requirements: Path | None) -> None:
    """Prepare a wheelhouse in DIRECTORY for BASE_IMAGE's Python (swarmrun, its dependencies and
    yours), to carry to an air-gapped machine and build there with `image build --wheelhouse`."""
    client = engine.connect()
    target = target_interpreter(client, base_image)
    path = make_wheelhouse(target, directory, read_requirements(requirements) if requirements else [],
                           home=_home(), log=lambda line: click.echo(line, err=True))
    click.echo(f"{len(list(path.glob('*.whl')))} wheels for {target.describe()} in {path}", err=True)
    click.echo(str(path))
