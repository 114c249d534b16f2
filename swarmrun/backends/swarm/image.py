"""The worker image: swarmrun and the task code, built offline from a wheelhouse made on the host.

Here the docker build: the build context (a tar of the Dockerfile, the wheels and the task code,
`.dockerignore` honoured) and the build itself with its log. The base image's Python is asked in
`interpreter`; the wheels it needs come from `wheelhouse`.
"""

from __future__ import annotations

import importlib.resources
import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import docker
import docker.errors

import swarmrun
from swarmrun.backends.swarm.engine import translated
from swarmrun.backends.swarm.interpreter import target_interpreter
from swarmrun.backends.swarm.wheelhouse import (
    Log,
    cached_dependencies,
    closure_gaps,
    install_requirements,
    read_requirements,
    swarmrun_wheel,
    unmarked,
)
from swarmrun.errors import ImageBuildError

DEFAULT_TAG = "swarmrun-worker:latest"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
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
