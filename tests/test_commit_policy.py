"""Committer policy in memory: an in-memory `RowSink` records every chunk it is given.

test_commit.py checks the same committer against a real SQLite file; here the chunks
themselves are looked at (when they close, what each holds), which the database hides.
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.core.vocabulary import BLOCKS
from etl.refresh.commit import Committer
from tests.test_commit import IPS, Clock, base_rows, cymru_part, greynoise_part


class MemorySink:
    """A `etl.refresh.commit.RowSink` that keeps each chunk written; ``fail_after`` writes, raises (a database gone)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.chunks: list[pl.DataFrame] = []
        self.asn_chunks: list[pl.DataFrame] = []
        self.fail_after = fail_after

    def write(self, ips: pl.DataFrame, asns: pl.DataFrame) -> None:
        if self.fail_after is not None and len(self.chunks) >= self.fail_after:
            raise ConnectionError("the database went away")
        self.chunks.append(ips)
        self.asn_chunks.append(asns)

    @property
    def sizes(self) -> list[int]:
        return [chunk.height for chunk in self.chunks]

    def blocks(self) -> Counter[tuple[str, str]]:
        """How many times each (IP, block) was written."""
        counts: Counter[tuple[str, str]] = Counter()
        for chunk in self.chunks:
            for block in BLOCKS:
                for ip in chunk.filter(pl.col(block).is_not_null())["ip_address"]:
                    counts[ip, block] += 1
        return counts


def test_a_chunk_closes_at_commit_every_rows() -> None:
    sink, clock = MemorySink(), Clock()
    committer = Committer(sink, 10, clock=clock)
    committer.hold(base_rows(IPS), {"greynoise": pl.Series(IPS)})
    committer.add(greynoise_part(IPS[0:4]))
    committer.add(greynoise_part(IPS[4:8]))
    assert sink.sizes == []  # 8 rows < 10
    committer.add(greynoise_part(IPS[8:10]))
    assert sink.sizes == [10]  # 10 rows: closed
    for start in (10, 14, 18):
        committer.add(greynoise_part(IPS[start : start + 4]))
    assert sink.sizes == [10, 10, 2]  # 12 rows: closed, written in slices of commit_every
    assert committer.holding == 18


def test_a_chunk_closes_max_wait_after_its_first_row() -> None:
    sink, clock = MemorySink(), Clock()
    committer = Committer(sink, 1000, max_wait=2.0, clock=clock)
    committer.hold(base_rows(IPS), {"greynoise": pl.Series(IPS)})
    committer.add(greynoise_part(IPS[:3]))
    clock.now = 1.5
    committer.add(greynoise_part(IPS[3:5]))  # joins the open chunk: its clock does not restart
    clock.now = 1.99
    committer.tick()
    assert sink.sizes == []
    clock.now = 2.0
    committer.tick()
    assert sink.sizes == [5]
    clock.now = 2.5
    committer.add(greynoise_part(IPS[5:6]))  # a new chunk, timed from its own first row
    clock.now = 4.4
    committer.tick()
    assert sink.sizes == [5]
    clock.now = 4.5
    committer.tick()
    assert sink.sizes == [5, 1]


def test_base_rows_go_out_with_their_answers_and_the_others_at_once() -> None:
    sink, written = MemorySink(), []
    committer = Committer(sink, 1000, clock=Clock(), on_base_written=written.append)
    committer.hold(base_rows(IPS), {"cymru": pl.Series(IPS[:30])})
    assert sink.sizes == [10] and written == [10]  # nothing owed for these: not held
    assert sink.chunks[0]["ip_address"].to_list() == IPS[30:]
    committer.add(cymru_part(IPS[:30]))
    committer.source_done("cymru")
    [answered] = sink.chunks[1:]
    assert sorted(answered["ip_address"]) == sorted(IPS[:30]) and written == [10, 30]
    assert answered.select(pl.col("maxmind", "cymru").is_not_null().all()).row(0) == (True, True)
    assert answered["greynoise"].is_null().all()


def test_a_part_with_an_ip_twice_is_one_row() -> None:
    sink = MemorySink()
    committer = Committer(sink, 1000, clock=Clock())
    committer.hold(
        base_rows(IPS[:2]), {"cymru": pl.Series(IPS[:2]), "greynoise": pl.Series(IPS[:2])}
    )
    committer.add(cymru_part(IPS[:2]))
    committer.add(greynoise_part(IPS[:2]))
    committer.flush()
    assert sink.sizes == [2]
    assert sink.chunks[0].select(pl.col("cymru", "greynoise").is_not_null().all()).row(0) == (
        True,
        True,
    )


Arrival = tuple[str, frozenset[str], float, bool]  # source, IPs, pause after, idle tick
arrivals = st.lists(
    st.tuples(
        st.sampled_from(["cymru", "greynoise"]),
        st.frozensets(st.sampled_from(IPS), max_size=12),
        st.floats(0, 3),
        st.booleans(),
    ),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(
    owed=st.fixed_dictionaries(
        {"cymru": st.sets(st.sampled_from(IPS)), "greynoise": st.sets(st.sampled_from(IPS))}
    ),
    arrivals=arrivals,
    commit_every=st.integers(1, 50),
    max_hold=st.sampled_from([1.0, 4.0, 1e9]),
)
def test_every_block_is_written_exactly_once_whatever_the_timing(
    owed: dict[str, set[str]], arrivals: list[Arrival], commit_every: int, max_hold: float
) -> None:
    sink, clock, written = MemorySink(), Clock(), []
    committer = Committer(
        sink, commit_every, clock=clock, max_hold=max_hold, on_base_written=written.append
    )
    committer.hold(
        base_rows(IPS), {s: pl.Series(sorted(ips), dtype=pl.String) for s, ips in owed.items()}
    )
    answered: dict[str, set[str]] = {"cymru": set(), "greynoise": set()}
    parts = {"cymru": cymru_part, "greynoise": greynoise_part}
    for source, ips, pause, idle in arrivals:
        fresh = sorted(ips & owed[source] - answered[source])  # each IP it was asked, once
        if fresh:
            committer.add(parts[source](fresh))
            answered[source] |= set(fresh)
        clock.now += pause
        committer.tick(idle=idle)
    for source in ("cymru", "greynoise"):
        committer.source_done(source)
    committer.flush()
    expected = {(ip, b): 1 for ip in IPS for b in ("validation", "maxmind")}
    expected |= {(ip, s): 1 for s, ips in answered.items() for ip in ips}
    assert dict(sink.blocks()) == expected
    assert sum(written) == len(IPS) and committer.holding == 0
    assert all(chunk.height <= commit_every for chunk in sink.chunks)
    assert all(chunk["ip_address"].is_unique().all() for chunk in sink.chunks)
    if max_hold == 1e9:  # never released alone: a row goes out with its first answer
        writes = Counter(ip for chunk in sink.chunks for ip in chunk["ip_address"])
        both = owed["cymru"] & owed["greynoise"]  # the second answer may close a later chunk
        assert all(writes[ip] == 1 for ip in IPS if ip not in both)
        assert all(writes[ip] <= 2 for ip in both)


def test_unwritten_keeps_the_answers_of_a_failed_write_with_their_base_rows() -> None:
    sink = MemorySink(fail_after=1)
    committer = Committer(sink, 1000, clock=Clock())
    committer.hold(base_rows(IPS[:6]), {"greynoise": pl.Series(IPS[:4])})
    assert sink.sizes == [2]  # the base rows nobody owes
    part = greynoise_part(IPS[:4]).with_columns(
        greynoise_status=pl.Series(["ok", "error", "not_found", "skipped"])
    )
    committer.add(part)
    with pytest.raises(ConnectionError):
        committer.flush()
    kept = committer.unwritten().sort("ip")
    assert kept["ip"].to_list() == [IPS[0], IPS[2]]  # ok and not_found only
    assert kept["maxmind"].is_not_null().all()  # with the base rows they took along
    assert kept["greynoise_status"].to_list() == ["ok", "not_found"]
    assert committer.unwritten().height == 0


def test_unwritten_drops_error_blocks_of_an_ip_kept_for_another_source() -> None:
    committer = Committer(MemorySink(), 1000, clock=Clock())
    committer.keep(cymru_part([IPS[0]]).with_columns(cymru_status=pl.lit("error")))
    committer.keep(greynoise_part([IPS[0], IPS[1]]))
    kept = committer.unwritten().sort("ip")
    assert kept["ip"].to_list() == [IPS[0], IPS[1]]
    assert kept["cymru"].to_list() == [None, None] and kept["cymru_status"].to_list() == [
        None,
        None,
    ]
    assert kept["greynoise"].is_not_null().all()
