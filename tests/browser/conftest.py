"""Browser fixtures: `swarmrun dashboard` as a user starts it, and headless Debian Chromium.

Chromium runs with the flags of the machine notes (no background networking: the network is
closed) and a fresh profile; every browser and driver process is killed by pid at teardown.
Screenshots go to $SWARMRUN_TEST_ARTIFACTS (default tests/artifacts/, which CI keeps).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Processes, free_port, require, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("SWARMRUN_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


class Dashboard:
    """A `swarmrun dashboard` process this test started."""

    def __init__(self, procs: Processes, *args: str) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        for k, a in enumerate(args):
            if a == "--host":
                self.host = args[k + 1]
        self.proc = procs.spawn(["dashboard", "--port", str(self.port), "--interval", "0.3", *args])
        self.url = f"http://{self.host}:{self.port}"
        self.token: str | None = None
        lines: list[str] = []

        def ready() -> bool:
            assert self.proc.poll() is None, (
                f"dashboard exited: {self.proc.stdout.read() if self.proc.stdout else ''}"
            )
            try:
                urllib.request.urlopen(f"{self.url}/static/style.css", timeout=1)  # noqa: S310
                return True
            except urllib.error.HTTPError:
                return True  # it answers (401 without the token)
            except OSError:
                return False

        wait_until(ready, 30, message="the dashboard to answer")
        if self.host != "127.0.0.1":
            assert self.proc.stdout is not None
            while self.token is None:
                line = self.proc.stdout.readline()
                lines.append(line)
                m = re.search(r"token: (\S+)", line)
                if m:
                    self.token = m[1]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    require(
        shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    pids = _tree(service.process.pid)
    try:
        yield driver
    finally:
        pids = list(dict.fromkeys([*pids, *_tree(service.process.pid)]))
        try:
            driver.quit()
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            service.process.wait(timeout=10) if service.process.poll() is None else None


def screenshot(driver: object, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
