"""The CLI's port-forward to Redis (`swarmrun.backends.kubernetes.forward`), against a fake tunnel.

`kubernetes.stream.portforward` swaps the `call_api` of the ApiClient it is handed for a websocket
transport while it opens a stream, and puts back what it found when done. Two tunnels opened at
once on the client the rest of the CLI uses could leave that client on the websocket transport for
good: every later API call (the Redis pod lookup of each new tunnel, `replicas()`) then failed with
"Missing required parameter `ports`", and a manager whose Redis connection broke could never
reconnect. Here the websocket transport is a fake that holds each open for a while.
"""

from __future__ import annotations

import functools
import importlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as kclient  # noqa: E402

kstream = importlib.import_module(
    "kubernetes.stream.stream"
)  # the module (the package exports a function of that name)

from swarmrun.backends.kubernetes.forward import PortForward  # noqa: E402

pytestmark = pytest.mark.timeout(60)


class FakeTunnel:
    """What `portforward()` returns: `.socket(port)` is our end; the far end echoes."""

    def __init__(self) -> None:
        self.mine, self.far = socket.socketpair()
        threading.Thread(target=self._echo, daemon=True).start()

    def _echo(self) -> None:
        with self.far:
            while data := self.far.recv(65536):
                self.far.sendall(data)

    def socket(self, port: int) -> socket.socket:
        return self.mine

    def close(self) -> None:
        self.mine.close()


def _portforward(open_tunnel: Any) -> Any:
    """`kubernetes.stream.portforward` with `open_tunnel` as its websocket transport."""
    return functools.partial(kstream._websocket_request, open_tunnel, {"_preload_content": False})


@pytest.fixture
def slow_streams(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Make `kubernetes.stream.portforward` open fake tunnels, each held open for the next delay of
    the list the test fills (through the library's own `_websocket_request`, so it swaps
    `call_api` exactly as the real one does)."""
    delays: list[float] = []
    lock = threading.Lock()

    def open_tunnel(configuration: Any, method: str, url: str, **kwargs: Any) -> FakeTunnel:
        assert "/portforward" in url, url  # only stream opens may take this transport
        with lock:
            delay = delays.pop(0) if delays else 0.0
        time.sleep(delay)
        return FakeTunnel()

    monkeypatch.setattr(kubernetes.stream, "portforward", _portforward(open_tunnel))
    yield delays


def _shared_core() -> Any:
    configuration = kclient.Configuration()
    configuration.host = "http://127.0.0.1:9"  # nothing listens: no request may leave
    return kclient.CoreV1Api(kclient.ApiClient(configuration))


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_tunnels_opened_at_once_leave_the_shared_client_alone(slow_streams: list[float]) -> None:
    core = _shared_core()
    shared = core.api_client
    # The first open holds the stream transport for 0.3 s; the second starts 0.1 s later and
    # holds it for 0.5 s, so the first finishes in the middle of the second.
    slow_streams.extend([0.3, 0.5])
    with PortForward(core, "ns", lambda: "redis-0", 6379) as forward:
        results: list[bytes] = []
        first = threading.Thread(target=lambda: results.append(_roundtrip(forward.port, b"first")))
        first.start()
        time.sleep(0.1)
        results.append(_roundtrip(forward.port, b"second"))
        first.join()
    assert sorted(results) == [b"first", b"second"]  # both tunnels carried their bytes
    # The client the rest of the CLI shares is back on its plain HTTP transport.
    transport = getattr(shared.call_api, "__func__", None)
    assert transport is kclient.ApiClient.call_api, (
        "a stream's websocket transport stayed on the shared client"
    )


def test_a_tunnel_that_fails_to_open_closes_only_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Redis pod lookup failing (no ready pod) ends that one connection; the next one works."""
    calls = {"n": 0}

    def pick_pod() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("no ready Redis pod")
        return "redis-0"

    monkeypatch.setattr(
        kubernetes.stream,
        "portforward",
        functools.partial(
            kstream._websocket_request, lambda *a, **k: FakeTunnel(), {"_preload_content": False}
        ),
    )
    with PortForward(_shared_core(), "ns", pick_pod, 6379) as forward:
        with socket.create_connection(("127.0.0.1", forward.port), timeout=10) as s:
            assert s.recv(10) == b""  # closed by the forwarder
        assert _roundtrip(forward.port, b"again") == b"again"
