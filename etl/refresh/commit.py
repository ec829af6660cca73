"""Commit results as they arrive (SPEC 4), writing each row as few times as possible.

Two kinds of rows reach the committer:
- base rows (validation and MaxMind blocks of every selected IP; they cost no network call):
  `hold` writes at once the rows no network source will answer, and keeps the others (up to
  ``max_hold`` seconds) so that they go out in the same upsert as their network answers;
- network parts (cymru or greynoise blocks, paid for): a chunk closes at ``commit_every``
  rows or ``max_wait`` seconds after its first row, whichever comes first, and takes along
  the held base rows of its IPs. When a source has sent its last part, the buffered rows no
  other running source still owes an answer for are written at once.

So every row is written once, with its answers, as they come; only when a service is slow
(the committer idle, and ``max_hold`` passed) are the base rows still waiting written on
their own (a killed run then keeps them too). While answers arrive faster than they can be
written, the base rows keep waiting for them: releasing them then would write each row twice.
Nothing paid for waits more than ``max_wait`` uncommitted.

Parts may carry the same IP (its cymru block from one, its greynoise block from another); the
rows of one IP are merged into one before a chunk is written, because one upsert statement may
touch a row only once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

import polars as pl

from etl.core.vocabulary import ANSWERED, NETWORK_SOURCES
from etl.refresh.merge import asn_rows, merged_enrichment

MAX_WAIT_SECONDS = 2.0
MAX_HOLD_SECONDS = 60.0


class RowSink(Protocol):
    """Where committed chunks go: `etl.db.write.ChunkWriter`, or a test's in-memory list."""

    def write(self, ips: pl.DataFrame, asns: pl.DataFrame) -> None:
        """Upsert one chunk: ``ips`` (one row per IP, its merged ``enrichment``) and the ASN
        rows they point at, as one unit."""


def write_rows(writer: RowSink, frame: pl.DataFrame, commit_every: int) -> set[int]:
    """Write committer rows (``ip`` and the step columns) in chunks; return the ASNs they
    point at."""
    asns: set[int] = set()
    for chunk in frame.iter_slices(commit_every):
        rows = asn_rows(chunk)
        writer.write(merged_enrichment(chunk), rows)
        asns.update(rows["asn_number"].to_list())
    return asns


def combine(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """One frame, one row per IP, from parts that may share IPs (first non-null value wins)."""
    frame = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    if frame["ip"].is_duplicated().any():
        frame = frame.group_by("ip", maintain_order=True).agg(pl.all().drop_nulls().first())
    return frame


class _HeldRows:
    """Base rows waiting for their answers: sorted by IP, so that a part finds its rows by
    binary search, with a mask of those already taken (set in place: no copy of the whole
    set per chunk)."""

    def __init__(self, rows: pl.DataFrame) -> None:
        self.rows = rows.sort("ip")
        self.ips = self.rows["ip"]
        self.taken = pl.repeat(False, self.rows.height, dtype=pl.Boolean, eager=True)
        self.left = self.rows.height

    def take(self, ips: pl.Series) -> pl.DataFrame:
        """The held rows of ``ips`` not taken yet (now taken), in the order of ``ips``."""
        if not self.left or not ips.len():
            return self.rows.clear()
        position = self.ips.search_sorted(ips).clip(0, self.rows.height - 1)
        held = (self.ips.gather(position) == ips) & ~self.taken.gather(position)
        index = position.filter(held).unique(maintain_order=True)
        self.taken.scatter(index, True)
        self.left -= index.len()
        return self.rows[index]

    def rest(self) -> pl.DataFrame:
        """Every row not taken yet (now all taken)."""
        rest = self.rows.filter(~self.taken)
        self.taken = pl.repeat(True, self.rows.height, dtype=pl.Boolean, eager=True)
        self.left = 0
        return rest


class Committer:
    """Buffers base rows and result parts; writes them in chunks to a `RowSink`.

    ``on_base_written(n)`` is called each time ``n`` base rows have been written (each base
    row once: their sum is the distinct IPs written, ``base_written``).
    """

    def __init__(
        self,
        writer: RowSink,
        commit_every: int,
        max_wait: float = MAX_WAIT_SECONDS,
        on_base_written: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_hold: float = MAX_HOLD_SECONDS,
        revise: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    ) -> None:
        self.writer = writer
        # base rows with their answers, before they are written (`OfflineSources.revise`)
        self.revise = revise
        self.base_written = 0
        self.commit_every = commit_every
        self.max_wait = max_wait
        self.max_hold = max_hold
        self.on_base_written = on_base_written
        self.clock = clock
        self.asns: set[int] = set()
        self._parts: list[pl.DataFrame] = []
        self._rows = 0
        self._first_at = 0.0
        self._held: _HeldRows | None = None
        self._held_at = 0.0
        self._awaited: dict[str, pl.Series] = {}  # per source still running: the IPs it owes
        self._writing: pl.DataFrame | None = None  # the rows of a write under way

    @property
    def holding(self) -> int:
        """Base rows still waiting for their network answers."""
        return 0 if self._held is None else self._held.left

    def hold(self, base: pl.DataFrame, awaited: Mapping[str, pl.Series]) -> None:
        """Write the base rows whose IPs no source owes (``awaited``: per source, the IPs it
        is asked about) now; hold the others."""
        self._awaited = {source: ips.cast(pl.String) for source, ips in awaited.items()}
        owed = pl.concat([pl.Series(dtype=pl.String), *self._awaited.values()])
        waiting = pl.col("ip").is_in(owed.implode())
        self._held = _HeldRows(base.filter(waiting))
        self._held_at = self.clock()
        self._write(base.filter(~waiting))

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

    def source_done(self, source: str) -> None:
        """``source`` has sent its last part: write the buffered rows no other source still
        owes an answer for (they would only wait); keep the others, which then go out once,
        with that answer (still within ``max_wait``)."""
        self._awaited.pop(source, None)
        if not self._parts or not self._awaited:
            self._flush_parts()
            return
        frame = self._writing = combine(self._parts)
        owed = pl.concat(list(self._awaited.values())).implode()
        later = frame.filter(pl.col("ip").is_in(owed))
        self._parts, self._rows = [later] if later.height else [], later.height
        self._write_parts(frame.filter(~pl.col("ip").is_in(owed)))

    def tick(self, idle: bool = False) -> None:
        """Commit what has waited long enough: a chunk of parts (``max_wait``); and, when the
        committing thread is ``idle`` (no answer waiting to be written, so the services are
        slower than the writes), the base rows held for ``max_hold``."""
        now = self.clock()
        if self._parts and now - self._first_at >= self.max_wait:
            self._flush_parts()
        if idle and self.holding and now - self._held_at >= self.max_hold:
            self._release_held()

    def flush(self) -> None:
        """Write everything buffered and held."""
        self._flush_parts()
        self._release_held()

    def _flush_parts(self) -> None:
        if not self._parts:
            return
        frame = self._writing = combine(self._parts)
        self._parts, self._rows = [], 0
        self._write_parts(frame)

    def _write_parts(self, frame: pl.DataFrame) -> None:
        """Write answered rows together with their held base rows."""
        if not frame.height:
            self._writing = None
            return
        base = self._held.take(frame["ip"]) if self._held is not None else None
        if base is not None and base.height:
            frame = combine([base, frame])
            if self.revise is not None:
                frame = self.revise(frame)
        self._write(frame, base_rows=0 if base is None else base.height)

    def _release_held(self) -> None:
        if self._held is not None:
            self._write(self._held.rest())

    def _write(self, frame: pl.DataFrame, base_rows: int | None = None) -> None:
        """Write ``frame`` in chunks; ``base_rows`` of its rows are base rows (None: all)."""
        if not frame.height:
            self._writing = None
            return
        self._writing = frame
        for chunk in frame.iter_slices(self.commit_every):
            self.asns.update(write_rows(self.writer, chunk, self.commit_every))
            if base_rows is None:
                self._written(chunk.height)
        if base_rows is not None:
            self._written(base_rows)
        self._writing = None

    def _written(self, base_rows: int) -> None:
        """Count and report the base rows a write committed."""
        self.base_written += base_rows
        if base_rows and self.on_base_written:
            self.on_base_written(base_rows)

    def keep(self, part: pl.DataFrame) -> None:
        """Buffer a part without writing anything (the run is stopping: see `unwritten`)."""
        if part.height:
            self._parts.append(part)

    def unwritten(self) -> pl.DataFrame:
        """The answers not known to be committed (buffered, or in a write that failed or was
        interrupted), with the base rows of their IPs: what a stopping run keeps for the next
        one. Only ``ok``/``not_found`` answers are kept: an ``error`` (or a chunk a cancelled
        client never asked) would only overwrite an older block that still holds data."""
        frames = [*self._parts, *([self._writing] if self._writing is not None else [])]
        self._parts, self._rows, self._writing = [], 0, None
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame()
        frame = combine(frames)
        paid = [s for s in NETWORK_SOURCES if f"{s}_status" in frame.columns]
        answered = {s: pl.col(f"{s}_status").is_in(ANSWERED) for s in paid}
        if not answered:
            return pl.DataFrame()
        frame = frame.filter(pl.any_horizontal(answered.values())).with_columns(
            pl.when(answered[s]).then(pl.col(c)).otherwise(None).alias(c)
            for s in paid
            for c in frame.columns
            if c == s or c.startswith(f"{s}_")
        )
        if self._held is None:
            return frame
        # The held rows of these IPs, taken or not (a write interrupted after it took them).
        base = self._held.rows.filter(pl.col("ip").is_in(frame["ip"].implode()))
        return combine([base, frame]) if base.height else frame
