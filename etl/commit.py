"""Commit results as they arrive (SPEC 4): a chunk closes at ``commit_every`` rows or two seconds
after its first row, whichever comes first.

Parts from different sources may carry the same IP (its cymru block from one, its greynoise
block from another); rows of one IP are merged into one before a chunk is written, because one
upsert statement may touch a row only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
    """Buffers result parts and writes them in chunks through a `ChunkWriter`."""

    def __init__(
        self,
        writer: ChunkWriter,
        commit_every: int,
        max_wait: float = MAX_WAIT_SECONDS,
        on_commit: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.commit_every = commit_every
        self.max_wait = max_wait
        self.on_commit = on_commit
        self.clock = clock
        self.asns: set[int] = set()
        self.commits = 0
        self._parts: list[pl.DataFrame] = []
        self._rows = 0
        self._first_at = 0.0

    def add(self, part: pl.DataFrame) -> None:
        """Buffer a part; commit when the chunk is full."""
        if not part.height:
            return
        if not self._parts:
            self._first_at = self.clock()
        self._parts.append(part)
        self._rows += part.height
        if self._rows >= self.commit_every:
            self.flush()

    def tick(self) -> None:
        """Commit a chunk whose first row has waited ``max_wait`` seconds."""
        if self._parts and self.clock() - self._first_at >= self.max_wait:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered, in chunks of at most ``commit_every`` rows."""
        if not self._parts:
            return
        frame = combine(self._parts)
        self._parts, self._rows = [], 0
        for chunk in frame.iter_slices(self.commit_every):
            asns = asn_rows(chunk)
            self.writer.write(merged_enrichment(chunk), asns)
            self.asns.update(asns["asn_number"].to_list())
            self.commits += 1
            if self.on_commit:
                self.on_commit(chunk.height)
