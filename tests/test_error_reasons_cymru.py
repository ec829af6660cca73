"""Why a Team Cymru query failed: its ``error`` block says so under the ``error`` key, in the
words of its last session (the connection's failure, or for a session that ended normally "no
answer line" / "unreadable answer line"); null for every other status. In memory (fake sockets),
the parser (property tests), and against the simulator's faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.sources.cymru.client import Batch, CymruClient, CymruSettings, IpAnswer
from etl.sources.cymru.steps import cymru_results, split_batch
from etl.sources.cymru.wire import NO_ANSWER_LINE, UNREADABLE_LINE, BulkParser
from tests.sims import running
from tests.test_cymru_client import WORLD
from tests.test_cymru_policy import (
    BANNER,
    FakeCymru,
    FakeSocket,
    Reply,
    answer_all,
    client_for,
    row,
)

MOMENT = datetime(2026, 12, 1, tzinfo=UTC)


def one_batch(fake: FakeCymru, queries: list[str], **overrides: object) -> Batch:
    [batch] = list(client_for(fake, [], **overrides).lookup(queries))
    return batch


QUERIES = [f"198.51.100.{n}" for n in range(1, 7)]


def first_three(cut: bool) -> Callable[[list[str]], Reply]:
    """A session that answers only the first three queries (of those asked), then ends."""
    return lambda asked: Reply(
        "\n".join([BANNER, *(row(q) for q in asked if q in QUERIES[:3])]) + "\n", cut=cut
    )


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (first_three(cut=True), "connection reset without an answer"),
        (lambda q: TimeoutError("timed out"), "no answer within 30 s"),
        (lambda q: ConnectionResetError("reset"), "connection reset without an answer"),
        (lambda q: Reply(""), NO_ANSWER_LINE),  # the session ended, not a line for them
        (first_three(cut=False), NO_ANSWER_LINE),
    ],
)
def test_cymru_queries_left_without_an_answer_say_why(
    script: Callable[[list[str]], Reply | OSError], reason: str
) -> None:
    batch = one_batch(FakeCymru(script), QUERIES, retries=1)
    assert batch.failed and set(batch.reasons) == set(batch.failed)
    assert set(batch.reasons.values()) == {reason}


def test_a_rejected_line_in_place_of_an_answer_is_unreadable() -> None:
    def script(asked: list[str]) -> Reply:
        lines = [("%% garbled" if q == QUERIES[1] else row(q)) for q in asked if q != QUERIES[5]]
        return Reply("\n".join([BANNER, *lines]) + "\n")

    batch = one_batch(FakeCymru(script), QUERIES, retries=1)
    assert batch.reasons == {QUERIES[1]: UNREADABLE_LINE, QUERIES[5]: NO_ANSWER_LINE}


@pytest.mark.parametrize(
    ("sessions", "reason"),
    [  # None: the connection is refused
        ([ConnectionResetError("reset"), None], "connection refused"),  # sent once: failed
        ([None, Reply("")], NO_ANSWER_LINE),
        ([TimeoutError("timed out"), Reply(BANNER + "\n%% garbled\n")], UNREADABLE_LINE),
    ],
)
def test_the_last_session_of_a_query_names_its_reason(
    sessions: list[Reply | OSError | None], reason: str
) -> None:
    steps = iter(sessions)

    def connect(address: tuple[str, int], timeout: float) -> FakeSocket:
        step = next(steps)
        if step is None:
            raise ConnectionRefusedError("refused")
        return FakeSocket(lambda q: step, [])

    settings = CymruSettings(host="whois.test", sessions=1, backoff=0.01, retries=1)
    [batch] = list(CymruClient(settings, [].append, connect).lookup(QUERIES[:1]))
    assert batch.failed == QUERIES[:1] and batch.reasons == {QUERIES[0]: reason}


def test_an_answer_after_a_failure_leaves_no_reason_and_an_ok_block_a_null_error() -> None:
    tries = iter([TimeoutError("timed out")])
    fake = FakeCymru(lambda q: next(tries, None) or Reply(answer_all(q)))
    batch = one_batch(fake, QUERIES, retries=1)
    assert batch.failed == [] and batch.reasons == {}
    blocks = [json.loads(text) for text in cymru_results(batch, MOMENT)["cymru"]]
    assert all(block["error"] is None and block["status"] == "ok" for block in blocks)


def test_the_cymru_block_has_error_just_before_status() -> None:
    batch = Batch(1, 1, [QUERIES[0], "AS64500", QUERIES[1]])
    batch.answers = {QUERIES[0]: IpAnswer((64501,), "X", "NL", "ripencc", "198.51.100.0/24", None)}
    batch.failed = [QUERIES[1], "AS64500"]
    batch.reasons = {QUERIES[1]: "no answer within 30 s", "AS64500": NO_ANSWER_LINE}
    ip_batch, as_batch = split_batch(batch)
    assert (ip_batch.reasons, as_batch.reasons) == (
        {QUERIES[1]: "no answer within 30 s"}, {"AS64500": NO_ANSWER_LINE},
    )  # fmt: skip
    blocks = [json.loads(text) for text in cymru_results(ip_batch, MOMENT)["cymru"]]
    assert [list(block) for block in blocks] == [
        ["asn", "asns", "asn_org", "country", "registry", "prefix", "allocation_date", "error",
         "status", "cached_at"],
    ] * 2  # fmt: skip
    assert [(b["error"], b["status"]) for b in blocks] == [
        (None, "ok"), ("no answer within 30 s", "error"),
    ]  # fmt: skip


LINES = {
    "row": lambda q, n: row(q) if "." in q else f"{q[2:]:<8}| US | arin | 2001-01-01 | N-{q}",
    "na": lambda q, n: (f"NA | {q} | NA | | other | | NA" if "." in q
                        else "NA      |    | other    |            | NA"),
    "error": lambda q, n: f"Error: no ASN or IP match on line {n}.",
    "garbled": lambda q, n: "%%% garbled \x7f line",
}  # fmt: skip


@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(LINES))), min_size=1, max_size=20),
    st.integers(0, 5),
)
def test_each_unanswered_query_of_a_complete_session_says_why(
    kinds: list[tuple[bool, str]], absent: int
) -> None:
    """One line per query (a row, an NA row, an error line or a rejected one), then ``absent``
    queries with no line at all: only a rejected line's query is unreadable, the absent ones
    have no answer line, the others are answered."""
    queries = [f"198.18.0.{i + 1}" if is_ip else f"AS{100 + i}" for i, (is_ip, _) in
               enumerate([*kinds, *[(True, "")] * absent])]  # fmt: skip
    parser = BulkParser(queries)
    for number, (query, (_, kind)) in enumerate(zip(queries, kinds, strict=False), start=3):
        parser.feed(LINES[kind](query, number))
    result = parser.result(complete=True)
    left = [q for q in queries if q not in result]
    expected = {q: UNREADABLE_LINE for q, (_, kind) in zip(queries, kinds, strict=False)
                if kind == "garbled"}  # fmt: skip
    expected |= dict.fromkeys(queries[len(kinds) :], NO_ANSWER_LINE)
    assert parser.why_unanswered(left) == expected


# -- against the simulator ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("silent", "no answer within 0.5 s"),
        ("stall", "no answer within 0.5 s"),
        ("drop", "connection reset without an answer"),
        ("garble", UNREADABLE_LINE),  # a junk line in place of every third answer
    ],
)
def test_each_cymru_simulator_fault_is_the_blocks_reason(
    tmp_path: Path, fault: str, reason: str
) -> None:
    ips = [ip for ip in WORLD.attacking_ips(40, np.random.default_rng(8)) if ":" not in ip]
    with running("cymru", tmp_path / "log.jsonl", "--fault", fault) as sim:
        settings = CymruSettings(host="127.0.0.1", port=sim.port, batch_size=50, retries=0,
                                 read_timeout=0.5, backoff=0.01)  # fmt: skip
        [batch] = list(CymruClient(settings).lookup(ips[:20]))
    assert batch.failed and set(batch.reasons) == set(batch.failed)
    assert set(batch.reasons.values()) == {reason}
    frame = cymru_results(batch, MOMENT)
    blocks = {ip: json.loads(text) for ip, text in zip(frame["ip"], frame["cymru"], strict=True)}
    for ip, block in blocks.items():
        assert block["error"] == batch.reasons.get(ip)
        assert (block["status"] == "error") == (ip in batch.failed)
