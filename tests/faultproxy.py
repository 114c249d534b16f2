"""A TCP proxy in front of a real server that breaks the way a Kubernetes port-forward does.

`outage(seconds)` resets every open connection and, for `seconds`, resets each new one right
after accepting it: the listener stays up, as the CLI's in-process port-forward does while the
kubelet is away (it accepts, fails to open the stream through the API server, and closes the
connection with the client's handshake still unread). `outage(seconds, refuse=True)` closes the
listener instead, so new connections are refused until it listens again on the same port: a Redis
that restarts. Tests use it to show that a manager rides out a Redis it cannot reach for a while,
and gives up in bounded time when Redis stays away.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a closing socket with unread bytes does."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    """127.0.0.1:<port> forwarded to `target`; `outage()` breaks it for a while."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._down_until = 0.0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.resets = 0  # connections reset by an outage, open or new
        self._server = self._listen(0)
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._server,), name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def _listen(port: int) -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(128)
        return server

    def outage(self, seconds: float, *, refuse: bool = False) -> None:
        """Reset every open connection; for `seconds`, reset (or refuse) every new one."""
        self._down_until = time.monotonic() + seconds
        with self._lock:
            socks, self._open = list(self._open), set()
            self.resets += len(socks) // 2
        for s in socks:
            _reset(s)
        if refuse:
            with contextlib.suppress(OSError):
                self._server.close()
            threading.Thread(target=self._listen_again, args=(seconds,), daemon=True).start()

    def _listen_again(self, after: float) -> None:
        time.sleep(after)
        while not self._closed.is_set():
            try:
                self._server = self._listen(self.port)
            except OSError:  # the port is briefly still taken: try again
                time.sleep(0.1)
                continue
            self._accept(self._server)
            return

    def _accept(self, server: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: by close(), or by a refusing outage (which listens again)
            if time.monotonic() < self._down_until:
                self.resets += 1
                threading.Thread(target=self._reset_soon, args=(conn,), daemon=True).start()
                continue
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    @staticmethod
    def _reset_soon(conn: socket.socket) -> None:
        """The port-forward's way: accepted, the client writes its handshake, then a reset."""
        time.sleep(0.05)
        _reset(conn)

    def _pipe(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(conn)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((conn, upstream))
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, conn)
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except (OSError, ValueError):
            pass  # reset by an outage
        finally:
            sel.close()
            with self._lock:
                self._open.discard(conn)
                self._open.discard(upstream)
            for s in (conn, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self.outage(0)
