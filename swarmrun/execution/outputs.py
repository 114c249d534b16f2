"""Output files: the sweep-file keys that name them, a point's own directory, and matching files in it.

A point runs with a fresh directory of its own (`$SWARMRUN_POINT_DIR`, the `{outdir}` placeholder),
removed after the point whatever happens. The files in it that match the sweep's `outputs:` globs
are the point's outputs; they are moved to the manager by `swarmrun.execution.outputstore`.
Parsing and the glob checks are pure; `PointDir` and `match` touch the file system only.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from swarmrun.errors import SweepFileError

OUTPUT_KEYS = ("outputs", "max_output_bytes", "max_sweep_output_bytes", "logs", "outputs_dir")
LOG_POLICIES = ("all", "failed", "none")
DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024 * 1024
POINT_DIR_ENV = "SWARMRUN_POINT_DIR"
SETTLED_NS = 100_000_000  # 0.1 s: far coarser than any file system's timestamp clock
WORK_DIR_ENV = "SWARMRUN_WORK_DIR"
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 1024**2}
_UNITS.update({"g": 10**9, "gb": 10**9, "gib": 1024**3})
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")


def _where(where: str, key: str) -> str:
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def parse_size(where: str, value: Any) -> int:
    """Bytes from an integer or a string such as `100KiB`, `16 MiB`, `2GB`; SweepFileError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)) and m.group(2).lower() in _UNITS:
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise SweepFileError(f"{where}: expected a number of bytes (e.g. 1048576 or '16MiB'), got {value!r}")
    if size < 1:
        raise SweepFileError(f"{where}: must be at least 1 byte, got {value!r}")
    return size


def check_glob(where: str, pattern: Any) -> str:
    """A glob relative to the point's directory; one that could escape it is refused."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise SweepFileError(f"{where}: expected a glob such as '*.npz', got {pattern!r}")
    if pattern.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", pattern):
        raise SweepFileError(
            f"{where}: {pattern!r} is an absolute path; outputs are globs relative to the point's directory"
        )
    if ".." in PurePosixPath(pattern.replace("\\", "/")).parts:
        raise SweepFileError(f"{where}: {pattern!r} leaves the point's directory ('..' is not allowed)")
    if "\x00" in pattern:
        raise SweepFileError(f"{where}: {pattern!r} holds a NUL character")
    return pattern


def parse_output_options(where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The output and log keys of a sweep file (or a stored options dict), validated; Options kwargs."""
    out: dict[str, Any] = {}
    raw = data.get("outputs")
    if raw is not None:
        patterns = [raw] if isinstance(raw, str) else raw
        if not isinstance(patterns, list | tuple):
            raise SweepFileError(f"{_where(where, 'outputs')}: expected a list of globs, got {raw!r}")
        out["outputs"] = tuple(
            check_glob(f"{_where(where, 'outputs')}[{n}]", p) for n, p in enumerate(patterns)
        )
    if data.get("max_output_bytes") is not None:
        out["max_output_bytes"] = parse_size(_where(where, "max_output_bytes"), data["max_output_bytes"])
    if data.get("max_sweep_output_bytes") is not None:
        out["max_sweep_output_bytes"] = parse_size(
            _where(where, "max_sweep_output_bytes"), data["max_sweep_output_bytes"]
        )
    logs = data.get("logs")
    if logs is not None:
        if logs not in LOG_POLICIES:
            raise SweepFileError(f"{_where(where, 'logs')}: expected one of all, failed, none; got {logs!r}")
        out["logs"] = logs
    outputs_dir = data.get("outputs_dir")
    if outputs_dir is not None:
        if not isinstance(outputs_dir, str) or not outputs_dir.startswith("/"):
            raise SweepFileError(
                f"{_where(where, 'outputs_dir')}: expected an absolute path on a mount every worker has, "
                f"got {outputs_dir!r}"
            )
        out["outputs_dir"] = outputs_dir
    return out


def sweep_dir_name(sweep_name: str, sweep_id: str) -> str:
    """`<sweep-name>-<id8>`: the directory of a sweep's results (beside its CSV of the same stem)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep_name) or "sweep"
    return f"{safe}-{sweep_id[:8]}"


@dataclass(frozen=True)
class OutputFile:
    """One output file of a point: its path relative to the point's directory, size and sha256."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> list[Any]:
        return [self.name, self.size, self.sha256]

    @classmethod
    def from_json(cls, raw: Sequence[Any]) -> OutputFile:
        return cls(str(raw[0]), int(raw[1]), str(raw[2]))


class OutputTooLarge(Exception):
    """A point's outputs exceed a cap; the message is the point's one-line error."""


class PointDir:
    """The directory points run in, one per worker process, emptied after every point.

    Each point starts with an empty directory of its own (no other point runs in it meanwhile)
    and leaves nothing behind, whatever happens. Creating and removing a directory per point
    costs ~2 ms on a busy disk, so the directory is made once per process and emptied (an
    empty directory costs one scan); directories of dead workers are removed when the next
    worker on the machine makes its own.
    """

    def __init__(self, base: str | None = None) -> None:
        self.base = base or os.environ.get(WORK_DIR_ENV) or tempfile.gettempdir()
        self._path: Path | None = None
        self._fd = -1  # the directory, open: `fstat` is half the cost of `stat` by name
        self._ctime = 0
        self._settled = False

    def _make(self) -> Path:
        os.makedirs(self.base, exist_ok=True)
        _remove_dead(self.base)
        return Path(tempfile.mkdtemp(prefix=f"swarmrun-point-{os.getpid()}-", dir=self.base))

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = self._make()
            self._fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
            self._observe()
        return self._path

    def _observe(self) -> None:
        """Record the directory's change time, and whether it was already old when seen: file
        systems stamp with a coarse clock, so only then does any later change give a different
        one. The change time, not the modification time: moving the directory changes it too."""
        self._ctime = os.fstat(self._fd).st_ctime_ns
        self._settled = time.time_ns() - self._ctime > SETTLED_NS

    def clear(self) -> None:
        """Empty the directory; a directory that cannot be emptied (or was removed or moved by the
        point) is replaced by a new one.

        An old, unchanged change time means nothing was added: one `fstat` for most points.
        """
        if self._path is None:
            return
        try:
            if self._settled:
                st = os.fstat(self._fd)
                if st.st_ctime_ns == self._ctime and st.st_nlink:
                    return
            with os.scandir(self._path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
            if not os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                raise FileNotFoundError(self._path)  # another directory now has its name
            self._observe()
        except OSError:
            self.remove()

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            os.close(self._fd)
            self._path, self._fd = None, -1

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.clear()


def _remove_dead(base: str) -> None:
    """Remove the point directories of worker processes that no longer exist on this machine."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(r"swarmrun-point-(\d+)-\w+", name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            pass


def sha256_of(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_REAL: dict[str, Path] = {}  # real paths of point directories' parents (resolving: ~0.1 ms a call)


def _real(path: Path) -> Path:
    """The real path of a point directory. Executions staged on a shared file system each have a
    new directory in the same parent: the parent is resolved once, the leaf checked by `lstat`."""
    key = str(path.parent)
    if key not in _REAL:
        if len(_REAL) > 64:
            _REAL.clear()
        _REAL[key] = path.parent.resolve()
    leaf = _REAL[key] / path.name
    return leaf.resolve() if os.path.islink(leaf) else leaf


def _top_level_match(name: str, patterns: Sequence[str]) -> bool:
    """As `glob` matches a name in one directory: case-sensitive, and a leading dot only by a
    pattern that starts with one."""
    return any(
        fnmatch.fnmatchcase(name, p) for p in patterns if not name.startswith(".") or p.startswith(".")
    )


def match(point_dir: Path, patterns: Sequence[str], *, max_bytes: int) -> list[tuple[str, OutputFile]]:
    """The regular files under `point_dir` matching `patterns` (their paths, as text: a `Path`
    per file costs more than moving it), sorted by name, hashed.

    Symlinks are never followed out of the directory; OutputTooLarge when a file or the total
    is over `max_bytes`.
    """
    root = _real(point_dir)
    found: dict[str, tuple[str, int]] = {}
    if not any("/" in p or "\\" in p or "**" in p for p in patterns):  # top-level names: one scan
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and _top_level_match(entry.name, patterns):
                    found[entry.name] = (entry.path, entry.stat(follow_symlinks=False).st_size)
        patterns = ()
    for pattern in patterns:
        for hit in glob.glob(pattern, root_dir=root, recursive=True):
            path = root / hit
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue  # a directory, a symlink (never followed), a device
            if os.sep in hit:  # a parent could be a symlink leading out of the directory
                resolved = path.resolve()
                if root not in resolved.parents:
                    continue
                path = resolved
            found.setdefault(path.relative_to(root).as_posix(), (str(path), st.st_size))
    total = 0
    files: list[tuple[str, OutputFile]] = []
    for name in sorted(found):
        where, size = found[name]
        if size > max_bytes:
            raise OutputTooLarge(f"output file {name} is {size} bytes, over max_output_bytes ({max_bytes})")
        total += size
        if total > max_bytes:
            raise OutputTooLarge(
                f"outputs reach {total} bytes at {name} ({size} bytes), over max_output_bytes ({max_bytes})"
            )
        files.append((where, OutputFile(name, size, sha256_of(where))))
    return files
