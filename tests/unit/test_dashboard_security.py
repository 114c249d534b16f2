"""The dashboard's access rules as pure decisions (the browser tests show them end to end)."""

from __future__ import annotations

import pytest

from swarmrun.dashboard.security import Policy, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_off_loopback() -> None:
    p = Policy(token="t0k", csrf="c")
    assert not p.authorised(query=None, cookie=None, bearer=None)
    assert not p.authorised(query="wrong", cookie=None, bearer=None)
    assert p.authorised(query="t0k", cookie=None, bearer=None)
    assert p.authorised(query=None, cookie="t0k", bearer=None)
    assert p.authorised(query=None, cookie=None, bearer="t0k")
    assert Policy(token=None, csrf="c").authorised(query=None, cookie=None, bearer=None)


def test_loopback_checks_the_host_header_against_rebinding() -> None:
    p = Policy(token=None, csrf="c")
    assert p.host_allowed("127.0.0.1:8765") and p.host_allowed("localhost:1") and p.host_allowed("[::1]:80")
    assert not p.host_allowed("evil.example:8765") and not p.host_allowed(None)
    assert Policy(token="t", csrf="c").host_allowed("dash.lab:8765")


def test_posts_need_the_csrf_token_and_a_same_origin() -> None:
    p = Policy(token=None, csrf="c5rf")
    host = "127.0.0.1:8765"
    assert p.post_allowed(csrf="c5rf", origin="http://127.0.0.1:8765", host_header=host)
    assert p.post_allowed(csrf="c5rf", origin=None, host_header=host)
    assert not p.post_allowed(csrf=None, origin="http://127.0.0.1:8765", host_header=host)
    assert not p.post_allowed(csrf="nope", origin=None, host_header=host)
    assert not p.post_allowed(csrf="c5rf", origin="http://127.0.0.1:9999", host_header=host)
    assert not p.post_allowed(csrf="c5rf", origin="null", host_header=host)
