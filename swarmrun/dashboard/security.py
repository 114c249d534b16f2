"""Who may use the dashboard: a token off loopback, and no state change from another site.

- Bound to a loopback address, no token is needed, but the Host header must name loopback
  (so a page of another site cannot reach it through DNS rebinding).
- Bound to any other address, every request needs the token printed at start: `?token=` once
  (it is then kept in an HttpOnly, SameSite=Strict cookie), the cookie, or `Authorization: Bearer`.
- A POST needs the page's CSRF token in the `X-Swarmrun-CSRF` header (a cross-site form cannot
  set headers, and a cross-site fetch that sets one is refused by the browser's CORS check, as the
  dashboard answers no preflight), and an `Origin`, when sent, equal to the dashboard's own.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

COOKIE = "swarmrun_token"
CSRF_HEADER = "x-swarmrun-csrf"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Policy:
    """The checks for one server: its token (None on loopback) and its CSRF token."""

    token: str | None
    csrf: str

    def authorised(self, *, query: str | None, cookie: str | None, bearer: str | None) -> bool:
        if self.token is None:
            return True
        return any(v is not None and hmac.compare_digest(v, self.token) for v in (query, cookie, bearer))

    def host_allowed(self, host_header: str | None) -> bool:
        """On loopback only a loopback Host (rebinding); off loopback the token decides."""
        if self.token is not None:
            return True
        if not host_header:
            return False
        name = urlsplit(f"//{host_header}").hostname or ""
        return is_loopback(name)

    def post_allowed(self, *, csrf: str | None, origin: str | None, host_header: str | None) -> bool:
        if csrf is None or not hmac.compare_digest(csrf, self.csrf):
            return False
        if origin is None:
            return True
        return origin != "null" and urlsplit(origin).netloc == (host_header or "")
