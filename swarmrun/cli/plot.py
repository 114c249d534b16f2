"""`swarmrun plot`: draw a sweep's results to a PNG (or any format matplotlib writes)."""

from __future__ import annotations

from pathlib import Path

import click

from swarmrun.cli.common import State, pass_state, redis_options


@click.command()
@click.argument("sweep_id", required=False)
@click.option("--x", "x", required=True, metavar="AXIS", help="The axis along x.")
@click.option(
    "--y",
    "y",
    metavar="VALUE|AXIS",
    help="The value to plot (default: the first numeric one); an axis gives a heatmap over x and y.",
)
@click.option("--hue", metavar="AXIS", help="Split lines by this axis.")
@click.option(
    "--value", "-z", "value", metavar="VALUE", help="The heatmap's colour (default: the first value)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Default: swarmrun-results/NAME-ID.png",
)
@redis_options
@pass_state
def plot(
    state: State,
    sweep_id: str | None,
    x: str,
    y: str | None,
    hue: str | None,
    value: str | None,
    output: Path | None,
) -> None:
    """Plot a value of a sweep's results against an axis, or a heatmap over two axes."""
    from swarmrun.execution.watch import default_output
    from swarmrun.plot import draw

    queue = state.queue()
    sid = queue.resolve(sweep_id)
    sweep = queue.load(sid)
    path = output or default_output(sweep.name, sid).with_suffix(".png")
    kind = draw(queue, sweep, sid, path, x=x, y=y, hue=hue, value=value)
    click.echo(f"{kind} plot written to {path}", err=True)
