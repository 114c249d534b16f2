"""`swarmrun dashboard`: serve the web UI over the Redis the other commands use."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import click

from swarmrun.cli.common import State, pass_state, redis_options
from swarmrun.errors import BadOption, SwarmrunError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port."
)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between live updates.")
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("swarmrun-results"),
    show_default=True,
    help="Where `run` puts output files (served for download; fetched there when still in Redis).",
)
@redis_options
@pass_state
def dashboard(state: State, host: str, port: int, interval: float, results_dir: Path) -> None:
    """Serve a web dashboard of the sweeps (live progress, failures, retry, plots, downloads).

    On loopback (the default) no token is needed; on any other address every request needs the
    token printed here.
    """
    try:
        import uvicorn

        from swarmrun.dashboard.app import Dashboard, create_app
        from swarmrun.dashboard.security import Policy, is_loopback
    except ImportError as e:
        hint = f"pip install 'swarmrun[dashboard]' ({e.name} is missing)"
        raise BadOption(f"the dashboard needs its extra: {hint}") from None
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    policy = Policy(token=token, csrf=secrets.token_urlsafe(24))
    replicas = state.stack_backend().replicas if state.stack or state.kube is not None else None
    app = create_app(
        Dashboard(state.queue(), policy, replicas=replicas, interval=interval, results_dir=results_dir)
    )
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SwarmrunError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    port = int(sock.getsockname()[1])  # --port 0: a free port
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"swarmrun dashboard: {url}", err=True)
    if token:
        click.echo(f"token: {token} (every request needs it)", err=True)
    server.run(sockets=[sock])
