"""The dashboard's web app (Starlette): a JSON API, server-sent events and the static page.

Endpoints are plain functions (Starlette runs them in its thread pool) that read Redis through
swarmrun.dashboard.data; the live view streams `live()` once a second over SSE.
"""

from __future__ import annotations

import asyncio
import html
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from swarmrun.backends import Replicas
from swarmrun.dashboard import data
from swarmrun.dashboard.security import COOKIE, CSRF_HEADER, Policy
from swarmrun.definition.sweep import Sweep
from swarmrun.errors import SwarmrunError, SweepNotFound
from swarmrun.execution.export import export
from swarmrun.execution.queue import SweepQueue

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}


def plotly_js() -> Path:
    """plotly.min.js as the plotly wheel ships it (the page loads it from here: no CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class Dashboard:
    """The app's state: the queue, the security policy, rate meters, a sweep spec cache."""

    def __init__(
        self,
        queue: SweepQueue,
        policy: Policy,
        *,
        replicas: Callable[[], Replicas] | None = None,
        interval: float = 1.0,
        results_dir: Path = Path("swarmrun-results"),
    ) -> None:
        self.queue = queue
        self.results_dir = results_dir
        self.policy = policy
        self.replicas = replicas
        self.interval = interval
        self.meters = data.Meters()
        self._sweeps: dict[str, Sweep] = {}

    def sweep(self, sid: str) -> Sweep:
        if sid not in self._sweeps:
            self._sweeps[sid] = self.queue.load(sid)
        return self._sweeps[sid]

    def resolve(self, request: Request) -> str:
        return self.queue.resolve(str(request.path_params["sid"]))


def _int(request: Request, name: str, default: int, high: int = 10**9) -> int:
    try:
        return max(0, min(high, int(request.query_params.get(name, default))))
    except ValueError:
        return default


def create_app(dash: Dashboard) -> Starlette:
    def index(request: Request) -> Response:
        page = (STATIC / "index.html").read_text()
        return Response(
            page.replace("{{csrf}}", html.escape(dash.policy.csrf)),
            media_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    def asset(request: Request) -> Response:
        name = str(request.path_params["name"])
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript")
        if name not in ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    def sweeps(request: Request) -> Response:
        offset, limit = _int(request, "offset", 0), _int(request, "limit", 100, 500)
        return JSONResponse(data.sweeps(dash.queue, dash.meters, offset=offset, limit=limit))

    def sweep(request: Request) -> Response:
        sid = dash.resolve(request)
        out = data.live(dash.queue, sid, dash.meters, dash.replicas)
        out["columns"] = data.columns(dash.queue, dash.sweep(sid), sid)
        out["history"] = dash.meters.history.get(sid, [])
        return JSONResponse(out)

    async def events(request: Request) -> Response:
        sid = await asyncio.to_thread(dash.resolve, request)

        async def stream() -> AsyncIterator[str]:
            while not await request.is_disconnected():
                state = await asyncio.to_thread(data.live, dash.queue, sid, dash.meters, dash.replicas)
                yield f"data: {json.dumps(state)}\n\n"
                await asyncio.sleep(dash.interval)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    def failures(request: Request) -> Response:
        sid = dash.resolve(request)
        return JSONResponse(data.failure_groups(dash.queue, sid))

    def group(request: Request) -> Response:
        sid = dash.resolve(request)
        error = request.query_params.get("error", "")
        return JSONResponse(
            data.group_points(
                dash.queue,
                dash.sweep(sid),
                sid,
                error,
                offset=_int(request, "offset", 0),
                limit=_int(request, "limit", 50, 500),
            )
        )

    async def retry(request: Request) -> Response:
        sid = await asyncio.to_thread(dash.resolve, request)
        try:
            body = await request.json()
            error = str(body["error"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"error": "<error text of the group>"}'}, status_code=400)

        def run() -> dict[str, Any]:
            indices = data.group_indices(dash.queue, sid, error)
            cleared = dash.queue.retry_failed(sid, indices)
            return {"cleared": cleared, "workers": dash.queue.live_workers()}

        return JSONResponse(await asyncio.to_thread(run))

    def point(request: Request) -> Response:
        sid = dash.resolve(request)
        sweep = dash.sweep(sid)
        index = int(request.path_params["index"])
        if not 0 <= index < sweep.size:
            return JSONResponse({"error": f"no point {index} (the sweep has {sweep.size})"}, status_code=404)
        return JSONResponse(data.point(dash.queue, sweep, sid, index))

    def point_file(request: Request) -> Response:
        sid = dash.resolve(request)
        index, name = int(request.path_params["index"]), str(request.path_params["name"])
        sweep = dash.sweep(sid)
        path = (
            data.point_file(dash.queue, sweep, sid, index, name, dash.results_dir)
            if index < sweep.size
            else None
        )
        if path is None:
            return PlainTextResponse(f"point {index} has no output file {name!r} here", status_code=404)
        return FileResponse(path, media_type="application/octet-stream", filename=Path(name).name)

    def plot(request: Request) -> Response:
        sid = dash.resolve(request)
        sweep = dash.sweep(sid)
        x, y = request.query_params.get("x"), request.query_params.get("y")
        hue = request.query_params.get("hue") or None
        if x not in sweep.param_names or (hue is not None and hue not in sweep.param_names) or not y:
            return JSONResponse({"error": f"x and hue must be axes of the sweep: {sweep.param_names}"}, 400)
        return JSONResponse(data.plot(dash.queue, sweep, sid, x=x, y=y, hue=hue))

    def download(request: Request) -> Response:
        sid = dash.resolve(request)
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "parquet", "jsonl"):
            return PlainTextResponse("format must be csv, parquet or jsonl", status_code=400)
        sweep = dash.sweep(sid)
        tmp = Path(tempfile.mkdtemp(prefix="swarmrun-dl-"))
        name = f"{sweep.name}-{sid[:8]}.{fmt}"
        path = tmp / name
        export(dash.queue, sweep, sid, path, fmt)

        def cleanup() -> None:
            path.unlink(missing_ok=True)
            tmp.rmdir()

        return FileResponse(path, filename=name, background=BackgroundTask(cleanup))

    routes = [
        Route("/", index),
        Route("/static/{name}", asset),
        Route("/api/sweeps", sweeps),
        Route("/api/sweeps/{sid}", sweep),
        Route("/api/sweeps/{sid}/events", events),
        Route("/api/sweeps/{sid}/failures", failures),
        Route("/api/sweeps/{sid}/group", group),
        Route("/api/sweeps/{sid}/retry", retry, methods=["POST"]),
        Route("/api/sweeps/{sid}/points/{index:int}", point),
        Route("/api/sweeps/{sid}/points/{index:int}/files/{name:path}", point_file),
        Route("/api/sweeps/{sid}/plot", plot),
        Route("/api/sweeps/{sid}/download", download),
    ]
    app = Starlette(routes=routes, exception_handlers={SwarmrunError: _error, SweepNotFound: _error})
    app.add_middleware(Guard, policy=dash.policy)
    return app


async def _error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, SweepNotFound) else 400
    return JSONResponse({"error": str(exc)}, status_code=status)


class Guard:
    """ASGI middleware: the token, the Host check and the POST (CSRF) checks of `Policy`."""

    def __init__(self, app: Callable[..., Awaitable[None]], policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        policy = self.policy
        host = request.headers.get("host")
        if not policy.host_allowed(host):
            await PlainTextResponse("forbidden host", status_code=403)(scope, receive, send)
            return
        auth = request.headers.get("authorization", "")
        query_token = request.query_params.get("token")
        if not policy.authorised(
            query=query_token,
            cookie=request.cookies.get(COOKIE),
            bearer=auth[7:] if auth.lower().startswith("bearer ") else None,
        ):
            await PlainTextResponse(
                "401: this dashboard needs the token `swarmrun dashboard` printed (open the URL it printed)",
                status_code=401,
            )(scope, receive, send)
            return
        if request.method not in ("GET", "HEAD") and not policy.post_allowed(
            csrf=request.headers.get(CSRF_HEADER), origin=request.headers.get("origin"), host_header=host
        ):
            await PlainTextResponse("403: cross-site request refused", status_code=403)(scope, receive, send)
            return
        if query_token is not None and policy.token is not None:
            # Keep the token in a cookie so the page's own requests carry it.
            async def send_with_cookie(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    cookie = f"{COOKIE}={policy.token}; Path=/; HttpOnly; SameSite=Strict"
                    message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await self.app(scope, receive, send)
