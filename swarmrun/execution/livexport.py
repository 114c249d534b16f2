"""Writing a sweep's results file while it runs (`swarmrun run -o FILE`).

A helper thread appends rows in index order as points complete: each pass it finds the first
point without a result (the done bitmap) and writes every row before it that is not written yet.
A point's record is final once its done bit is set (first write wins, in the same Redis script),
so each row is written once, and when the last point lands only the last rows are left to write.
`finish` writes those (and any later recorded points, as `export` would), so the file equals what
`swarmrun results -o FILE` writes afterwards: same rows, same order, same columns.

CSV and JSON Lines are written live; Parquet (one file, one schema) is written by `export` at the
end. A CSV whose value columns change after the header was written (a dict value with new keys,
or a scalar after dicts) is written again by `export` at the end.
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import IO

from swarmrun.definition.sweep import Sweep
from swarmrun.execution.export import NewColumns, Rows, export, format_of, jsonl_text, worker_origins
from swarmrun.execution.queue import SweepQueue
from swarmrun.execution.results import READ_BLOCK, Block, read_block

LIVE_FORMATS = ("csv", "jsonl")


class LiveExport:
    """`start()` once the sweep is submitted; `finish()` when it is over returns the rows written.

    A pass every `every` seconds: what `finish` has left to write is what landed in the last
    pass's wait and the chunks still running then. At 0.25 s that was about 27,000 rows of a
    10^5-point sweep on 2 workers (40 ms after the last point); at 0.05 s, none to 8,000 rows
    (up to 20 ms). A pass that finds nothing new costs one Redis call."""

    def __init__(
        self, queue: SweepQueue, sweep: Sweep, sweep_id: str, path: Path, *, every: float = 0.05
    ) -> None:
        self.queue, self.sweep, self.sweep_id, self.path = queue, sweep, sweep_id, path
        self.fmt = format_of(path)
        self.every = every
        self.next = 0  # every recorded point before this index is written
        self.written = 0
        self.redo = self.fmt not in LIVE_FORMATS  # True: `export` writes the whole file at the end
        self.error: BaseException | None = None
        self._file: IO[str] | None = None
        self._rows: Rows | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="swarmrun-live-export", daemon=True)

    def start(self) -> LiveExport:
        if not self.redo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="")
            self._thread.start()
        return self

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                frontier = self.queue.first_missing(self.sweep_id, self.next, self.sweep.size)
                self._write_to(self.sweep.size if frontier is None else frontier)
                if self.redo or self.next >= self.sweep.size:
                    return
                self._stop.wait(self.every)
        except BaseException as e:  # noqa: BLE001 - `finish` exports from scratch and says nothing
            self.error, self.redo = e, True

    def _write_to(self, stop: int) -> None:
        while self.next < stop and not self.redo:
            end = min(stop, self.next + READ_BLOCK)
            block = read_block(self.queue, self.sweep, self.sweep_id, self.next, end)
            if block.indices:
                self._write(block)
            self.next = end

    def _write(self, block: Block) -> None:
        assert self._file is not None
        origins = self.queue.origins(self.sweep.task.key)  # workers that joined since add origins
        if self.fmt == "jsonl":
            self._file.write(jsonl_text(block, worker_origins(origins, self.sweep_id), self.sweep_id))
        else:
            if self._rows is None:
                self._rows = Rows(self.sweep, self.sweep_id, origins, None)
                self._rows.learn(block)
                self._rows.fixed = True
                csv.writer(self._file).writerow(self._rows.header())
            else:
                self._rows.origins = worker_origins(origins, self.sweep_id)
                try:
                    self._rows.learn(block)
                except NewColumns:
                    self.redo = True
                    return
            self._file.write(self._rows.csv_text(block))
        self.written += len(block)

    def finish(self) -> int:
        """Stop the thread, write the rows not written yet; the number of rows in the file."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.redo:
            try:
                self._write_to(self.sweep.size)
            except NewColumns:
                self.redo = True
        if self._file is not None:
            self._file.close()
        if self.redo:
            return export(self.queue, self.sweep, self.sweep_id, self.path)
        return self.written
