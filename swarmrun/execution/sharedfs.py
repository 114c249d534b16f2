"""Output files on a file system the workers share: an `outputs_dir:` mount, or the manager's own
results directory when local workers see it.

Files are moved to `<root>/.staging/<index>.<token>/` and renamed to
`<root>/points/<index>/` once their execution's record won; only names, sizes and sha256 travel.
`root` is `<outputs_dir>/<name>-<id>/` (`outputs_dir:`, a mount every worker has), or the manager's
own results directory when the manager shares it (`share`): it writes a marker file with a random
nonce there and announces the directory in `swarmrun:sweep:{id}:outshare`; a worker that reads
the same nonce from the marker sees the same file system (local workers do; a container does only
with that directory mounted at the same path). A staged directory is promoted by the worker after
its record won, or by the manager's collector when that worker died first; a losing or killed
execution's staged directory is removed, never promoted.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import redis

from swarmrun.definition.sweep import Sweep
from swarmrun.execution.outputs import OutputFile, OutputTooLarge, sweep_dir_name

PREFIX = "swarmrun:sweep:"


class OutputsDirMissing(OutputTooLarge):
    """`outputs_dir` is not a directory on this worker; the message is the point's error."""


def share_key(sweep_id: str) -> str:
    return f"{PREFIX}{sweep_id}:outshare"


SHARE_MARKER = ".swarmrun-share"
SHARE_TTL = 120  # seconds; the manager's collector refreshes it on every pass
STAGED_AGE = 5.0  # seconds after which the manager promotes a staged directory its worker left


def sweep_root(outputs_dir: str, sweep: Sweep, sweep_id: str) -> Path:
    """A sweep's directory on an `outputs_dir:` mount."""
    return Path(outputs_dir) / sweep_dir_name(sweep.name, sweep_id)


def staging_dir(root: Path, index: int, token: str) -> Path:
    return Path(f"{root}/.staging/{index}.{token}")


def final_dir(root: Path, index: int) -> Path:
    return Path(f"{root}/points/{index}")


def check_mounted(outputs_dir: str) -> None:
    if not Path(outputs_dir).is_dir():
        raise OutputsDirMissing(
            f"outputs_dir {outputs_dir} is not a directory on this worker (is it mounted?)"
        )


def stage(target: Path, files: Sequence[tuple[str, OutputFile]]) -> None:
    """Move files into an execution's staging directory on the shared file system (a rename;
    a copy when the point's directory is on another file system)."""
    try:
        os.mkdir(target)
    except FileNotFoundError:  # the sweep's first point
        target.mkdir(parents=True)
    for path, f in files:
        dest = f"{target}/{f.name}"
        if "/" in f.name:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        try:
            os.rename(path, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.move(path, dest)


def promote(staged: Path, final: Path) -> bool:
    """Make a winning execution's staged files the point's files (one rename); False when they
    were promoted already (by the worker or the manager) or removed.

    The staged directory exists once, so only one rename of it succeeds. Files of an earlier
    winner (a point purged or retried) are moved aside and removed first.
    """
    for _ in range(3):
        try:
            os.rename(staged, final)
            return True
        except FileNotFoundError:
            if not staged.exists():
                return False
            final.parent.mkdir(parents=True, exist_ok=True)  # the sweep's first point
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            aside = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
    return False


def shared_root(connection: redis.Redis, sweep_id: str, seen: dict[str, bool] | None = None) -> Path | None:
    """The manager's results directory of a sweep when this process sees it (the same nonce in
    its marker file), else None. `seen` caches the check per announcement."""
    raw = connection.get(share_key(sweep_id))
    if not raw:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    cache = {} if seen is None else seen
    if text not in cache:
        try:
            where = json.loads(text)
            marker = Path(where["dir"]) / SHARE_MARKER
            cache[text] = marker.read_text().strip() == where["nonce"]
        except (OSError, ValueError, KeyError, TypeError):
            cache[text] = False
    return Path(json.loads(text)["dir"]) if cache[text] else None


class ExecutionDir:
    """A point's directory made as its execution's staging directory: with local workers the
    point writes its files where they stay (one `mkdir`, no move). Removed on leaving unless
    `keep` was set (its matched files are staged: `keep_only`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keep = False

    def __enter__(self) -> Path:
        try:
            os.mkdir(self.path)
        except FileNotFoundError:  # the sweep's first point
            self.path.mkdir(parents=True)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def keep_only(directory: Path, names: set[str]) -> None:
    """Remove everything under `directory` but the files `names` (relative, `/`-separated)."""
    with os.scandir(directory) as entries:  # the usual case, one scan: only kept files, at the top
        if all(e.name in names and e.is_file(follow_symlinks=False) for e in entries):
            return
    for top, dirs, files in os.walk(directory, topdown=False):
        rel = os.path.relpath(top, directory)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in files:
            if prefix + name not in names:
                os.unlink(os.path.join(top, name))
        for name in dirs:
            path = os.path.join(top, name)
            if os.path.islink(path):
                os.unlink(path)
            else:
                with contextlib.suppress(OSError):  # not empty: it holds kept files
                    os.rmdir(path)
