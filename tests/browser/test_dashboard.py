"""The dashboard in a real headless Chromium: live progress, failure triage, plots, security."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from swarmrun.execution.queue import SweepQueue
from tests.browser.conftest import Dashboard, screenshot
from tests.conftest import Processes, free_port, wait_until, write_sweep

pytestmark = pytest.mark.timeout(180)

NAPS = """
name: naps
task: {call: "fixtures.tasks:nap"}
chunk: 2
params:
  seconds: [0.1]
  i: {range: [0, 400]}
"""

TRIAGE = """
name: triage
task: {{call: "fixtures.tasks:fails_once"}}
params:
  marker_dir: ["{markers}"]
  bad: [7]
  x: {{range: [0, 8]}}
"""

HYPOT = """
name: hypot
task: {call: "fixtures.tasks:hypot"}
params:
  x: {range: [0, 5]}
  y: [0.5, 1.5]
"""


def find(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def finds(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def group_rows(driver) -> list[tuple[str, str]] | None:
    """(error, count) of each failure group on the page; None when the live page re-rendered the
    table while it was read (a stale element), so that `wait_until` looks again."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return [
            (
                g.find_element("css selector", ".group-error").text,
                g.find_element("css selector", ".count").text,
            )
            for g in finds(driver, "#failure-groups tr.group")
        ]
    except StaleElementReferenceException:
        return None


def text(element, css: str) -> str:
    return str(element.find_element("css selector", css).text)


def submit(procs: Processes, path: Path) -> str:
    r = procs.cli("submit", str(path))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_progress_advances_without_reload(procs: Processes, tmp_path: Path, browser) -> None:
    sid = submit(procs, write_sweep(tmp_path, NAPS))
    dash = Dashboard(procs)
    procs.worker()
    procs.worker()
    browser.get(f"{dash.url}/#/sweep/{sid}")
    browser.execute_script("window.__notReloaded = true;")

    def done() -> int:
        found = finds(browser, "#done-count")
        text = found[0].text if found else ""
        return int(text.split("/")[0]) if "/" in text else -1

    first = wait_until(lambda: 0 < done() < 380 and done(), 60, message="progress on the page")
    wait_until(lambda: done() >= first + 10, 60, message="progress advancing without a reload")
    assert browser.execute_script("return window.__notReloaded === true;")
    assert find(browser, "#workers").text == "2"
    wait_until(lambda: finds(browser, "#rate-chart .scatterlayer path.js-line"), 30, message="rate chart")
    screenshot(browser, "dashboard-live")

    browser.get(f"{dash.url}/#/")
    row = wait_until(lambda: finds(browser, f'#sweeps tr[data-id="{sid}"]'), 30, message="the sweeps list")
    assert "naps" in row[0].text and "/s" in row[0].text
    screenshot(browser, "dashboard-list")


def test_failure_group_retry_reruns_exactly_that_group(
    procs: Processes, tmp_path: Path, browser, rconn: redis.Redis
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = write_sweep(tmp_path, TRIAGE.format(markers=markers))
    r = procs.cli("run", str(path), "-w", "1", "-q")
    assert r.returncode == 1, r.stderr  # every point failed once
    sid = submit(procs, path)
    queue = SweepQueue(rconn, "swarmrun")
    assert queue.progress(sid).error == 8
    dash = Dashboard(procs)
    procs.worker()
    browser.get(f"{dash.url}/#/sweep/{sid}")

    rows = wait_until(lambda: group_rows(browser), 30, message="failure groups")
    assert rows == [("RuntimeError: transient failure", "7"), ("ValueError: x=7 is always bad", "1")]
    groups = finds(browser, "#failure-groups tr.group")
    groups[0].find_element("css selector", ".group-error").click()
    points = wait_until(
        lambda: finds(browser, "tr.group-points:not([hidden]) tr.point"), 30, message="group points"
    )
    assert sorted(int(p.get_attribute("data-i")) for p in points) == list(range(7))
    screenshot(browser, "dashboard-failures")

    finds(browser, "#failure-groups tr.group")[0].find_element("css selector", "button.retry").click()
    wait_until(lambda: queue.progress(sid).ok == 7, 60, message="the group's points to run again and succeed")
    remaining = wait_until(lambda: group_rows(browser), 30, message="groups")
    wait_until(
        lambda: (
            [error for error, _ in group_rows(browser) or [("", "")]] == ["ValueError: x=7 is always bad"]
        ),
        30,
        message="the retried group to leave the page",
    )
    assert remaining
    p = queue.progress(sid)
    assert (p.done, p.ok, p.error) == (8, 7, 1)  # exactly that group ran again; the other stayed
    screenshot(browser, "dashboard-after-retry")

    browser.get(f"{dash.url}/#/sweep/{sid}/point/7")
    error = wait_until(lambda: finds(browser, "#error"), 30, message="the point view")
    assert "x=7 is always bad" in error[0].text
    screenshot(browser, "dashboard-point")


def test_plot_renders_one_mark_per_point(procs: Processes, tmp_path: Path, browser) -> None:
    path = write_sweep(tmp_path, HYPOT)
    assert procs.cli("run", str(path), "-w", "1", "-q").returncode == 0
    sid = submit(procs, path)
    dash = Dashboard(procs)
    browser.get(f"{dash.url}/#/sweep/{sid}")
    wait_until(lambda: len(finds(browser, "#plot .scatterlayer path.point")) == 10, 30, message="10 marks")
    assert len(finds(browser, "#plot .scatterlayer .trace")) == 5  # lines split by x, one per value
    screenshot(browser, "dashboard-plot")
    from selenium.webdriver.support.ui import Select

    Select(find(browser, "#kind")).select_by_value("heatmap")
    wait_until(lambda: finds(browser, "#plot .heatmaplayer image, #plot .hm image"), 30, message="heatmap")
    screenshot(browser, "dashboard-heatmap")


def _lan_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def _status(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> int:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_without_the_token_off_loopback_every_request_is_401(procs: Processes, tmp_path: Path) -> None:
    address = _lan_address()
    assert not address.startswith("127."), address
    dash = Dashboard(procs, "--host", address)
    assert dash.token
    for path in ("/", "/static/app.js", "/static/plotly.min.js", "/api/sweeps"):
        assert _status(f"{dash.url}{path}") == 401, path
        assert _status(f"{dash.url}{path}?token=wrong") == 401, path
    assert _status(f"{dash.url}/?token={dash.token}") == 200
    assert _status(f"{dash.url}/api/sweeps", headers={"Authorization": f"Bearer {dash.token}"}) == 200


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """A page on another origin (another port) that posts to the dashboard."""
    root = tmp_path / "evil"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_cross_site_post_is_refused(
    procs: Processes, tmp_path: Path, browser, rconn: redis.Redis, other_site: str
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = write_sweep(tmp_path, TRIAGE.format(markers=markers))
    assert procs.cli("run", str(path), "-w", "1", "-q").returncode == 1
    sid = submit(procs, path)
    dash = Dashboard(procs)
    retry = f"{dash.url}/api/sweeps/{sid}/retry"
    body = json.dumps({"error": "RuntimeError: transient failure"}).encode()
    # Outside a browser: no CSRF header, or a foreign Origin, is refused.
    assert _status(retry, method="POST", body=body, headers={"Content-Type": "application/json"}) == 403
    assert (
        _status(retry, method="POST", body=body, headers={"Origin": other_site, "X-Swarmrun-CSRF": "x"})
        == 403
    )
    assert _status(f"{dash.url}/api/sweeps/{sid}/retry") == 405
    # In the browser: a page of another site submits a form and sends a fetch to the dashboard.
    (tmp_path / "evil" / "index.html").write_text(
        f"""<!doctype html><html><body>
<form id="f" method="POST" action="{retry}" enctype="text/plain">
<input name='{{"error": "RuntimeError: transient failure", "x": "' value='"}}'></form>
<script>
fetch("{retry}", {{method: "POST", mode: "no-cors", body: '{{"error": "RuntimeError: transient failure"}}'}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""
    )
    browser.get(f"{other_site}/index.html")
    wait_until(lambda: "cross-site request refused" in browser.page_source, 30, message="the refusal page")
    time.sleep(1)
    queue = SweepQueue(rconn, "swarmrun")
    p = queue.progress(sid)
    assert (p.done, p.error) == (8, 8)  # nothing was queued again
    screenshot(browser, "dashboard-cross-site-refused")


def test_port_in_use_is_one_line(procs: Processes) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = procs.cli("dashboard", "--port", str(port), timeout=30)
    assert r.returncode == 10
    assert r.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
