"""The committer: each row written once when answers come quickly, nothing held past max_wait."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.db.database import Database
from etl.db.url import parse_database_url
from etl.db.write import ChunkWriter
from etl.refresh.commit import Committer, _HeldRows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
IPS = [f"198.51.100.{n}" for n in range(1, 41)]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def base_rows(ips: list[str]) -> pl.DataFrame:
    """Validation and maxmind blocks, as the MaxMind step leaves them."""
    return pl.DataFrame(
        {
            "ip": ips,
            "first_seen": [NOW] * len(ips),
            "last_seen": [NOW] * len(ips),
            "session_count": [1] * len(ips),
            "validation": ['{"is_bogon": false}'] * len(ips),
            "maxmind": ['{"status": "ok"}'] * len(ips),
            "maxmind_asn": [64500] * len(ips),
            "maxmind_asn_org": ["Example"] * len(ips),
            "maxmind_status": ["ok"] * len(ips),
        }
    )


def greynoise_part(ips: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ip": ips,
            "greynoise_status": ["ok"] * len(ips),
            "greynoise": ['{"noise": true, "status": "ok"}'] * len(ips),
        }
    )


def cymru_part(ips: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ip": ips,
            "cymru_status": ["not_found"] * len(ips),
            "cymru": ['{"asn": null, "status": "not_found"}'] * len(ips),
        }
    )


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[ChunkWriter]:
    with Database(parse_database_url(f"sqlite:///{tmp_path / 'c.sqlite'}"), create=True) as db:
        db.ensure_schema()
        chunk_writer = ChunkWriter(db)
        yield chunk_writer
        chunk_writer.close()


def stored(writer: ChunkWriter) -> dict[str, dict[str, object]]:
    rows = writer.db.query_native("SELECT ip_address, enrichment FROM ip_inventory")
    return {str(ip): json.loads(str(text)) for ip, text in rows}


def test_quick_answers_are_written_once_with_their_base_rows(writer: ChunkWriter) -> None:
    clock = Clock()
    written: list[int] = []
    committer = Committer(writer, 1000, on_base_written=written.append, clock=clock)
    awaited = IPS[:30]
    committer.hold(base_rows(IPS), {"greynoise": pl.Series(awaited)})
    assert writer.rows_written == 10  # nothing to wait for: written at once
    assert committer.holding == 30
    committer.add(greynoise_part(awaited[:20]))
    clock.now = 1.9
    committer.tick()  # the part waited 1.9 s < 2 s: still buffered
    assert writer.rows_written == 10
    committer.add(greynoise_part(awaited[20:]))
    committer.flush()
    assert writer.rows_written == 40  # every row exactly once
    assert sum(written) == 40 and committer.holding == 0
    rows = stored(writer)
    assert all(set(rows[ip]) == {"validation", "maxmind", "greynoise"} for ip in awaited)
    assert all(set(rows[ip]) == {"validation", "maxmind"} for ip in IPS[30:])


def test_a_finished_source_closes_its_chunk(writer: ChunkWriter) -> None:
    committer = Committer(writer, 1000, clock=Clock())
    committer.hold(base_rows(IPS), {"greynoise": pl.Series(IPS)})
    committer.add(greynoise_part(IPS))
    assert writer.rows_written == 0  # 40 rows < 1,000 and no time has passed
    committer.source_done("greynoise")  # nothing more is coming: no reason to wait
    assert writer.rows_written == 40 and committer.holding == 0


def test_a_finished_source_keeps_rows_another_source_still_owes(writer: ChunkWriter) -> None:
    clock = Clock()
    committer = Committer(writer, 1000, clock=clock)
    both, cymru_only = IPS[:10], IPS[10:15]
    committer.hold(
        base_rows(IPS),
        {"cymru": pl.Series([*both, *cymru_only]), "greynoise": pl.Series([*both, *IPS[15:]])},
    )
    committer.add(cymru_part([*both, *cymru_only]))
    committer.source_done("cymru")  # greynoise still owes `both`: only cymru_only goes now
    assert writer.rows_written == 5
    committer.add(greynoise_part([*both, *IPS[15:]]))
    committer.source_done("greynoise")
    assert writer.rows_written == 40  # every row exactly once, with all its answers
    rows = stored(writer)
    assert all(set(rows[ip]) == {"validation", "maxmind", "cymru", "greynoise"} for ip in both)


def test_slow_answers_do_not_hold_base_rows_back(writer: ChunkWriter) -> None:
    clock = Clock()
    committer = Committer(writer, 1000, clock=clock)
    committer.hold(base_rows(IPS), {"greynoise": pl.Series(IPS)})
    committer.add(greynoise_part(IPS[:10]))
    clock.now = 2.0
    committer.tick()  # the answers waited max_wait: written, with their base rows
    assert writer.rows_written == 10 and committer.holding == 30
    clock.now = 59.9
    committer.tick(idle=True)
    assert writer.rows_written == 10
    clock.now = 60.0
    committer.tick()  # still busy writing answers: the base rows keep waiting for theirs
    assert writer.rows_written == 10
    committer.tick(idle=True)  # idle after max_hold: written without their answers
    assert writer.rows_written == 40 and committer.holding == 0
    committer.add(greynoise_part(IPS[30:35]))
    clock.now = 62.1
    committer.tick(idle=True)  # and a late answer is committed max_wait after it arrived
    assert writer.rows_written == 45
    assert set(stored(writer)[IPS[0]]) == {"validation", "maxmind", "greynoise"}


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    awaited=st.sets(st.sampled_from(IPS)),
    arrivals=st.lists(st.tuples(st.sets(st.sampled_from(IPS)), st.floats(0, 3)), max_size=6),
    commit_every=st.integers(3, 50),
)
def test_every_row_and_answer_lands_whatever_the_timing(
    tmp_path_factory: pytest.TempPathFactory,
    awaited: set[str],
    arrivals: list[tuple[set[str], float]],
    commit_every: int,
) -> None:
    path = tmp_path_factory.mktemp("commit") / "c.sqlite"
    with Database(parse_database_url(f"sqlite:///{path}"), create=True) as db:
        db.ensure_schema()
        writer = ChunkWriter(db)
        clock = Clock()
        written: list[int] = []
        committer = Committer(
            writer, commit_every, on_base_written=written.append, clock=clock, max_hold=4.0
        )
        committer.hold(base_rows(IPS), {"greynoise": pl.Series(sorted(awaited), dtype=pl.String)})
        answered: set[str] = set()
        for ips, pause in arrivals:
            if ips:
                committer.add(greynoise_part(sorted(ips)))
                answered |= ips
            clock.now += pause
            committer.tick(idle=pause > 1)
        committer.flush()
        rows = stored(writer)
        writer.close()
    assert sum(written) == len(IPS)  # each base row reported written once
    assert set(rows) == set(IPS)
    for ip in IPS:
        expected = {"validation", "maxmind"} | ({"greynoise"} if ip in answered else set())
        assert set(rows[ip]) == expected, ip


def test_a_stopping_run_keeps_only_answers_with_their_base_rows() -> None:
    """`Committer.unwritten`: answered (ok/not_found) blocks with the base columns of their
    IPs; an error, such as a chunk a cancelled client never asked, is not kept (it would
    overwrite an older block that still holds data)."""
    committer = Committer(writer=None, commit_every=100)  # type: ignore[arg-type]
    base = pl.DataFrame(
        {"ip": ["1.0.0.1", "1.0.0.2", "1.0.0.3"], "session_count": [5, 6, 7], "maxmind": ["{}"] * 3}
    )
    committer._held = _HeldRows(base)
    committer.keep(
        pl.DataFrame(
            {"ip": ["1.0.0.1", "1.0.0.2"], "cymru": ['{"a": 1}', '{"e": 1}'],
             "cymru_status": ["ok", "error"]}
        )
    )  # fmt: skip
    committer.keep(
        pl.DataFrame(
            {"ip": ["1.0.0.2"], "greynoise": ['{"g": 1}'], "greynoise_status": ["not_found"]}
        )
    )
    kept = committer.unwritten().sort("ip")
    assert kept["ip"].to_list() == ["1.0.0.1", "1.0.0.2"]
    assert kept["session_count"].to_list() == [5, 6]
    assert kept["cymru"].to_list() == ['{"a": 1}', None]
    assert kept["greynoise"].to_list() == [None, '{"g": 1}']
    assert committer.unwritten().height == 0
