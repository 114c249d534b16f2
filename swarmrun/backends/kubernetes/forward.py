"""A local TCP port forwarded to a pod's port through the Kubernetes API server.

What `kubectl port-forward` does, with the official client: every connection accepted on
127.0.0.1 opens its own port-forward stream to the pod that `pick_pod()` names at that moment (so
after the Redis pod is replaced, the next connection reaches the new one) and copies bytes both
ways. Nothing is exposed outside the cluster; the listener lives only as long as the command.

Each stream is opened through an ApiClient of its own: `kubernetes.stream.portforward` swaps the
`call_api` of the client it is handed for a websocket transport while it opens the stream, which is
not thread-safe. On the client the CLI shares, two streams opened at once (both of a manager's
Redis connections reconnecting after an outage) could leave it on the websocket transport for good,
so every later API call failed ("Missing required parameter `ports`"), the Redis pod lookup of
each new tunnel included, and the manager could never reach Redis again.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class PortForward:
    """Listen on 127.0.0.1:<port> until `close()`; each connection tunnels to `pick_pod():remote_port`."""

    def __init__(self, core: Any, namespace: str, pick_pod: Callable[[], str], remote_port: int) -> None:
        self.core = core
        self.namespace = namespace
        self.pick_pod = pick_pod
        self.remote_port = remote_port
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.port: int = self._server.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="swarmrun-port-forward", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _open_remote(self) -> tuple[Any, socket.socket]:
        from kubernetes.client import ApiClient, CoreV1Api
        from kubernetes.stream import portforward

        pod = self.pick_pod()
        # A client of its own for this stream (see the module's docstring); the websocket keeps
        # no reference to the client's HTTP pool, so closing the client right away is fine.
        with ApiClient(self.core.api_client.configuration) as api:
            forward = portforward(
                CoreV1Api(api).connect_get_namespaced_pod_portforward,
                pod,
                self.namespace,
                ports=str(self.remote_port),
            )
        remote: socket.socket = forward.socket(self.remote_port)
        remote.setblocking(True)
        return forward, remote

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        forward = remote = None
        try:
            forward, remote = self._open_remote()
            with self._lock:
                self._conns.add(remote)
            sel = selectors.DefaultSelector()
            sel.register(conn, selectors.EVENT_READ, remote)
            sel.register(remote, selectors.EVENT_READ, conn)
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except Exception as e:  # a broken tunnel ends this connection; the client reconnects
            log.debug("port-forward connection ended: %s", e)
        finally:
            for s in (conn, remote):
                if s is not None:
                    with self._lock:
                        self._conns.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()
            if forward is not None:
                with contextlib.suppress(Exception):
                    forward.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

    def __enter__(self) -> PortForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
