"""Commit results as they arrive (SPEC 4), writing each row as few times as possible.

Two kinds of rows reach the committer:
- base rows (validation and MaxMind blocks of every selected IP; they cost no network call):
  `hold` writes at once the rows no network source will answer, and keeps the others up to
  ``max_wait`` seconds so that they go out in the same upsert as their network answers;
- network parts (cymru or greynoise blocks, paid for): a chunk closes at ``commit_every``
  rows or ``max_wait`` seconds after its first row, whichever comes first (or when a source
  has sent its last part), and takes along the held base rows of its IPs.

So when the services answer quickly, every row is written once; when they are slow, the base
rows are written after ``max_wait`` and the answers as they come. Nothing paid for waits more
than ``max_wait`` uncommitted.

Parts may carry the same IP (its cymru block from one, its greynoise block from another); the
rows of one IP are merged into one before a chunk is written, because one upsert statement may
touch a row only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import polars as pl

from etl.db.write import ChunkWriter
from etl.merge import asn_rows, merged_enrichment

MAX_WAIT_SECONDS = 2.0


def combine(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """One frame, one row per IP, from parts that may share IPs (first non-null value wins)."""
    frame = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    if frame["ip"].is_duplicated().any():
        frame = frame.group_by("ip", maintain_order=True).agg(pl.all().drop_nulls().first())
    return frame


class Committer:
    """Buffers base rows and result parts; writes them in chunks through a `ChunkWriter`.

    ``on_base_written(n)`` is called each time ``n`` base rows have been written.
    """

    def __init__(
        self,
        writer: ChunkWriter,
        commit_every: int,
        max_wait: float = MAX_WAIT_SECONDS,
        on_base_written: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.commit_every = commit_every
        self.max_wait = max_wait
        self.on_base_written = on_base_written
        self.clock = clock
        self.asns: set[int] = set()
        self.commits = 0
        self._parts: list[pl.DataFrame] = []
        self._rows = 0
        self._first_at = 0.0
        self._held: pl.DataFrame | None = None
        self._held_at = 0.0

    @property
    def holding(self) -> int:
        """Base rows still waiting for their network answers."""
        return 0 if self._held is None else self._held.height

    def hold(self, base: pl.DataFrame, awaited: Collection[str]) -> None:
        """Write the base rows whose IPs are not in ``awaited`` now; hold the others."""
        waiting = pl.col("ip").is_in(pl.Series(list(awaited), dtype=pl.String).implode())
        self._held = base.filter(waiting)
        self._held_at = self.clock()
        self._write(base.filter(~waiting), base_rows=True)

    def add(self, part: pl.DataFrame) -> None:
        """Buffer a part; commit when the chunk is full."""
        if not part.height:
            return
        if not self._parts:
            self._first_at = self.clock()
        self._parts.append(part)
        self._rows += part.height
        if self._rows >= self.commit_every:
            self._flush_parts()

    def source_done(self) -> None:
        """A source has sent its last part: close the chunk now (no more rows are coming for
        it to wait for)."""
        self._flush_parts()

    def tick(self) -> None:
        """Commit what has waited ``max_wait`` seconds: a chunk of parts, or held base rows."""
        now = self.clock()
        if self._parts and now - self._first_at >= self.max_wait:
            self._flush_parts()
        if self.holding and now - self._held_at >= self.max_wait:
            self._release_held()

    def flush(self) -> None:
        """Write everything buffered and held."""
        self._flush_parts()
        self._release_held()

    def _flush_parts(self) -> None:
        if not self._parts:
            return
        frame = combine(self._parts)
        self._parts, self._rows = [], 0
        base_rows = 0
        if self.holding:
            assert self._held is not None
            answered = pl.col("ip").is_in(frame["ip"].implode())
            base = self._held.filter(answered)
            if base.height:
                self._held = self._held.filter(~answered)
                frame = combine([base, frame])
                base_rows = base.height
        self._write(frame)
        if base_rows and self.on_base_written:
            self.on_base_written(base_rows)

    def _release_held(self) -> None:
        if self.holding:
            assert self._held is not None
            held, self._held = self._held, None
            self._write(held, base_rows=True)

    def _write(self, frame: pl.DataFrame, base_rows: bool = False) -> None:
        if not frame.height:
            return
        for chunk in frame.iter_slices(self.commit_every):
            asns = asn_rows(chunk)
            self.writer.write(merged_enrichment(chunk), asns)
            self.asns.update(asns["asn_number"].to_list())
            self.commits += 1
            if base_rows and self.on_base_written:
                self.on_base_written(chunk.height)
