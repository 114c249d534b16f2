"""The Python API: run a sweep from a script or a notebook and get its results as a table.

    import swarmrun
    res = swarmrun.run("sweep.yaml", workers=4, params={"gamma": [0.1, 0.2]})
    df = res.to_pandas()          # one row per point: index, params, status, value columns, ...
    res.failed()                  # the failed and timed-out points' records

Redis is found as the CLI finds it: `redis_url=` (else SWARMRUN_REDIS_URL), the Redis of a
deployed `stack=`, else the embedded server. Nothing here uses asyncio, so it runs inside
Jupyter's event loop without conflict; `progress=True` prints the CLI's progress line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from swarmrun.backends import Replicas
from swarmrun.definition.sweep import Sweep
from swarmrun.definition.sweepfile import load_sweep, parse_sweep
from swarmrun.errors import SwarmrunError
from swarmrun.execution import progress as fmt
from swarmrun.execution.cachedoutputs import fetch_cached
from swarmrun.execution.connection import connect
from swarmrun.execution.export import table_columns
from swarmrun.execution.keyindex import indexing_message
from swarmrun.execution.outputstore import OutputCollector
from swarmrun.execution.queue import Progress, SweepQueue
from swarmrun.execution.results import Result, iter_results
from swarmrun.execution.task import preflight
from swarmrun.execution.watch import default_output, watch
from swarmrun.execution.watch import redis_url as resolve_url
from swarmrun.settings import Settings

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

SweepSource = str | os.PathLike[str] | Mapping[str, Any] | Sweep
BackendName = Literal["local", "swarm"]


def overrides_of(params: Mapping[str, Any] | None) -> list[str]:
    """`{"alpha": [0.1, 0.2], "+zz": 3}` as `-p` overrides (JSON is a YAML flow value)."""
    out = []
    for name, values in (params or {}).items():
        text = json.dumps(values if not isinstance(values, tuple | range) else list(values))
        out.append(f"{name}={text}")
    return out


def load(sweep: SweepSource, params: Mapping[str, Any] | None = None) -> tuple[Sweep, Path]:
    """A Sweep, and the directory its task is found from, from a file, a dict or a Sweep."""
    overrides = overrides_of(params)
    if isinstance(sweep, Sweep):
        if overrides:
            return parse_sweep(sweep.to_dict() | {}, overrides=overrides), Path.cwd()
        return sweep, Path.cwd()
    if isinstance(sweep, Mapping):
        return parse_sweep(sweep, source="sweep", base_dir=Path.cwd(), overrides=overrides), Path.cwd()
    path = Path(sweep)
    return load_sweep(path, overrides), path.resolve().parent


@dataclass(frozen=True)
class Connection:
    """How to reach a sweep's Redis again later (the embedded server is started on demand)."""

    settings: Settings
    url: str | None = None

    @contextlib.contextmanager
    def queue(self) -> Iterator[SweepQueue]:
        with contextlib.ExitStack() as stack:
            url = self.url or stack.enter_context(resolve_url(self.settings))
            connection = connect(url, resilient=True, patience=self.settings.redis_patience)
            stack.callback(connection.close)
            yield SweepQueue(connection, self.settings.queue)


def _connection(redis_url: str | None, stack: str | None, settings: Settings | None) -> Connection:
    s = (settings or Settings.from_env()).with_redis(redis_url)
    if s.url is None and stack:
        return Connection(s, _swarm_backend(s, stack, None).redis_url())
    return Connection(s, s.url)


def _swarm_backend(settings: Settings, stack: str, image: str | None) -> Any:
    from swarmrun.backends.swarm import engine
    from swarmrun.backends.swarm.backend import SwarmBackend
    from swarmrun.backends.swarm.stack import StackConfig

    config = StackConfig(name=stack)
    if image:
        config = replace(config, image=image)
    return SwarmBackend(engine.connect(), config, home=settings.home)


@dataclass
class Results:
    """A sweep's results: iterate over its records, or take them as a table.

    Records are read from Redis when asked for (not when the object is made), a block at a time.
    """

    sweep_id: str
    sweep: Sweep
    progress: Progress
    connection: Connection = field(repr=False)

    def __iter__(self) -> Iterator[Result]:
        with self.connection.queue() as queue:
            yield from iter_results(queue, self.sweep, self.sweep_id)

    def __len__(self) -> int:
        return self.progress.done

    def refresh(self) -> Results:
        """The same sweep's results as they are now."""
        with self.connection.queue() as queue:
            return replace(self, progress=queue.progress(self.sweep_id))

    def fetch_outputs(self, dest: Path | None = None) -> Path:
        """Fetch the output files not fetched yet into `dest/points/<index>/` (default
        `swarmrun-results/<name>-<id8>`, where `swarmrun run` puts them); returns it, absolute.
        `run` calls it at the end of a sweep with `outputs:`."""
        dest = (dest or default_output(self.sweep.name, self.sweep_id).with_suffix("")).absolute()
        with self.connection.queue() as queue:
            collector = OutputCollector(queue, self.sweep, self.sweep_id, dest)
            problems = collector.collect().problems + fetch_cached(collector).problems
        if problems:
            raise SwarmrunError(f"outputs of sweep {self.sweep_id[:12]}: " + "; ".join(problems))
        return dest

    def failed(self) -> list[Result]:
        """The records of the points that failed or timed out."""
        return [r for r in self if r.status != "ok"]

    def _columns(self) -> dict[str, list[Any]]:
        with self.connection.queue() as queue:
            return table_columns(queue, self.sweep, self.sweep_id)

    def to_arrow(self) -> pa.Table:
        """A pyarrow Table, one row per recorded point, the columns of the CSV export
        (needs `pip install swarmrun[arrow]`)."""
        try:
            import pyarrow as pa
        except ImportError:
            raise SwarmrunError("Results.to_arrow() needs pyarrow: pip install 'swarmrun[arrow]'") from None
        return pa.table(self._columns())

    def to_pandas(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per recorded point (needs `pip install swarmrun[pandas]`)."""
        try:
            import pandas as pd
        except ImportError:
            raise SwarmrunError("Results.to_pandas() needs pandas: pip install 'swarmrun[pandas]'") from None
        frame = pd.DataFrame(self._columns())
        frame["index"] = frame["index"].astype("int64")
        frame["cached"] = frame["cached"].astype("bool")
        return frame


def _printer(enabled: bool) -> Callable[[Progress, float | None, Replicas | None], None]:
    def show(p: Progress, rate: float | None, replicas: Replicas | None) -> None:
        if enabled:
            line = "\r" + fmt.progress_line(p, rate, replicas).ljust(100)
            print(line, end="\n" if p.complete else "", file=sys.stderr, flush=True)

    return show


def _indexing(enabled: bool) -> Callable[[int], None] | None:
    """`SweepQueue.submit`'s word on indexing earlier results, printed with the progress line."""
    if not enabled:
        return None
    return lambda results: print(indexing_message(results), file=sys.stderr, flush=True)


def submit(
    sweep: SweepSource,
    *,
    params: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    stack: str | None = None,
    check: bool = True,
    settings: Settings | None = None,
) -> str:
    """Put a sweep on the queue (workers run it) and return its id; resubmitting resumes it."""
    spec, origin = load(sweep, params)
    if check:
        preflight(spec.task, param_names=spec.param_names, origin=origin)
    with _connection(redis_url, stack, settings).queue() as queue:
        return queue.submit(spec, origin=origin).sweep_id


def results(
    sweep_id: str | None = None,
    *,
    redis_url: str | None = None,
    stack: str | None = None,
    settings: Settings | None = None,
) -> Results:
    """The results of a sweep (an id or id prefix; default: the newest sweep)."""
    connection = _connection(redis_url, stack, settings)
    with connection.queue() as queue:
        sid = queue.resolve(sweep_id)
        return Results(sid, queue.load(sid), queue.progress(sid), connection)


def run(
    sweep: SweepSource,
    *,
    workers: int | None = None,
    backend: BackendName = "local",
    params: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    stack: str = "swarmrun",
    image: str | None = None,
    progress: bool = False,
    check: bool = True,
    settings: Settings | None = None,
) -> Results:
    """Run a sweep until every point has a result and return its results.

    `backend="local"` starts `workers` worker processes here (default: the CPU count) and stops
    them at the end; `backend="swarm"` uses the deployed stack `stack` (deploying it with `image`
    when it is not there) and scales it to `workers` when given.
    """
    spec, origin = load(sweep, params)
    if check:
        preflight(spec.task, param_names=spec.param_names, origin=origin)
    s = settings or Settings.from_env()
    if redis_url:
        s = s.with_redis(redis_url)
    if backend == "swarm":
        return _run_swarm(spec, s, stack=stack, image=image, workers=workers, progress=progress)
    if backend != "local":
        raise SwarmrunError(f"backend must be 'local' or 'swarm', got {backend!r}")
    from swarmrun.backends.local import LocalBackend

    with resolve_url(s) as url:
        connection = Connection(s, s.url)
        queue = SweepQueue(connect(url, resilient=True, patience=s.redis_patience), s.queue)
        try:
            sub = queue.submit(spec, origin=origin, indexing=_indexing(progress))
            if sub.done < sub.size:
                local = LocalBackend(s, url, log_dir=s.home / "logs" / sub.sweep_id[:12], cwd=origin)
                share = None  # local workers put output files straight into place (as `run` does)
                if spec.options.outputs and not spec.options.outputs_dir:
                    dest = default_output(spec.name, sub.sweep_id).with_suffix("").absolute()
                    share = OutputCollector(queue, spec, sub.sweep_id, dest)
                    share.share()
                local.deploy(workers or os.cpu_count() or 1)
                try:
                    watch(
                        queue,
                        sub.sweep_id,
                        on_progress=_printer(progress),
                        replicas=local.replicas,
                        supervise=local.supervise,
                    )
                finally:
                    local.stop()
                    if share is not None:
                        share.collect(final=True)
                        share.unshare()
            final = queue.progress(sub.sweep_id)
        finally:
            queue.connection.close()
        return _with_outputs(Results(sub.sweep_id, spec, final, connection))


def _run_swarm(
    spec: Sweep, s: Settings, *, stack: str, image: str | None, workers: int | None, progress: bool
) -> Results:
    swarm = _swarm_backend(s, stack, image)
    if not swarm.exists():
        swarm.deploy(workers or 2)
    elif workers is not None:
        swarm.scale(workers)
    connection = Connection(s, s.url or swarm.redis_url())
    with connection.queue() as queue:
        sub = queue.submit(spec, indexing=_indexing(progress))
        final = watch(queue, sub.sweep_id, on_progress=_printer(progress), replicas=swarm.replicas)
    return _with_outputs(Results(sub.sweep_id, spec, final, connection))


def _with_outputs(results: Results) -> Results:
    """A finished sweep's results, its output files fetched (those not on a shared `outputs_dir`)."""
    if results.sweep.options.outputs and not results.sweep.options.outputs_dir:
        results.fetch_outputs()
    return results


def sweep_ids(
    *, redis_url: str | None = None, stack: str | None = None, settings: Settings | None = None
) -> Sequence[str]:
    """Every sweep id on this Redis, oldest first."""
    with _connection(redis_url, stack, settings).queue() as queue:
        return queue.sweep_ids()
