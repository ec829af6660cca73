"""Cymru client policy in memory: a fake socket replays scripted bulk whois wire text.

The wire format is that of shared/protocols/cymru-whois.md (banner, 7-column verbose rows,
``Error: ... line N.`` lines, EOF after ``end``); the simulator tests in test_cymru_client.py
exercise the same rules over real TCP.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from etl.core.errors import ServiceUnavailableError
from etl.sources.cymru.client import NOT_FOUND_IP, Batch, CymruClient, CymruSettings
from etl.sources.cymru.events import AsLookupsUnanswered, BatchAnswered
from etl.sources.cymru.phase import Tier1Plan, cymru_phase
from etl.sources.events import Event

BANNER = "Bulk mode; whois.cymru.com [2026-11-28 12:00:00 +0000]"


def row(ip: str) -> str:
    """The verbose answer line of an announced IP (AS number from its last octet)."""
    asn = 64_500 + int(ip.rsplit(".", 1)[1])
    prefix = ip.rsplit(".", 1)[0] + ".0/24"
    return f"{asn:<7} | {ip:<16} | {prefix:<19} | NL | ripencc  | 2001-05-17 | EXAMPLE-{asn}, NL"


def answer_all(queries: list[str]) -> str:
    return "\n".join([BANNER, *(row(q) for q in queries)]) + "\n"


@dataclass
class Reply:
    """What one session sends back: ``text``, then EOF, or ``cut`` (a reset) after it."""

    text: str
    cut: bool = False


Script = Callable[[list[str]], Reply | OSError]


class FakeSocket:
    """Replays the reply the script gives for the queries sent, in small pieces."""

    def __init__(self, script: Script, sessions: list[list[str]]) -> None:
        self.script, self.sessions = script, sessions
        self.timeouts: list[float | None] = []
        self.out = b""
        self.cut = False
        self.closed = False

    def settimeout(self, value: float | None, /) -> None:
        self.timeouts.append(value)

    def sendall(self, data: bytes, /) -> None:
        lines = data.decode("ascii").split("\n")
        assert lines[:2] == ["begin", "verbose"] and lines[-2:] == ["end", ""]
        queries = lines[2:-2]
        self.sessions.append(queries)
        reply = self.script(queries)
        if isinstance(reply, OSError):
            raise reply
        self.out, self.cut = reply.text.encode(), reply.cut

    def recv(self, size: int, /) -> bytes:
        piece, self.out = self.out[: min(size, 37)], self.out[min(size, 37) :]
        if not piece and self.cut:
            raise ConnectionResetError("reset by peer")
        return piece

    def close(self) -> None:
        self.closed = True


class FakeCymru:
    """The ``connect`` of a client: each call is a session of ``script``; ``refuse`` connects
    fail first."""

    def __init__(self, script: Script = lambda q: Reply(answer_all(q)), refuse: int = 0) -> None:
        self.script, self.refuse = script, refuse
        self.sessions: list[list[str]] = []
        self.sockets: list[FakeSocket] = []
        self.addresses: list[tuple[tuple[str, int], float]] = []
        self._lock = threading.Lock()

    def connect(self, address: tuple[str, int], timeout: float) -> FakeSocket:
        with self._lock:
            self.addresses.append((address, timeout))
            if self.refuse:
                self.refuse -= 1
                raise ConnectionRefusedError("refused")
            sock = FakeSocket(self.script, self.sessions)
            self.sockets.append(sock)
            return sock


def client_for(fake: FakeCymru, sleeps: list[float], **overrides: object) -> CymruClient:
    options: dict[str, object] = {"sessions": 1, "backoff": 0.5, "min_split": 50, **overrides}
    settings = CymruSettings(host="whois.test", port=43, **options)  # type: ignore[arg-type]
    return CymruClient(settings, sleeps.append, connect=fake.connect)


def ips(count: int) -> list[str]:
    return [f"198.51.{n // 200}.{n % 200 + 1}" for n in range(count)]


def one_batch(client: CymruClient, queries: list[str]) -> Batch:
    [batch] = list(client.lookup(queries))
    return batch


def test_a_good_session_answers_every_query_and_closes_its_socket() -> None:
    fake, sleeps = FakeCymru(), []
    queries = ips(20)
    batch = one_batch(client_for(fake, sleeps), queries)
    assert batch.failed == [] and batch.sessions == 1 and sleeps == []
    assert batch.answers[queries[3]].asns == (64_504,)
    assert batch.answers[queries[3]].prefix == "198.51.0.0/24"
    assert fake.addresses == [(("whois.test", 43), 10.0)]
    assert fake.sockets[0].timeouts == [30.0] and fake.sockets[0].closed


def test_a_failed_session_is_retried_with_backoff() -> None:
    failures = iter([Reply(BANNER + "\n", cut=True), ConnectionResetError("reset")])
    fake, sleeps = FakeCymru(lambda q: next(failures, None) or Reply(answer_all(q))), []
    batch = one_batch(client_for(fake, sleeps, retries=2), ips(30))
    assert batch.failed == [] and len(batch.answers) == 30
    assert batch.sessions == 3 and sleeps == [0.5, 1.0]  # doubled each time
    assert all(sock.closed for sock in fake.sockets)


def test_a_cut_session_keeps_all_but_its_last_answer_and_asks_the_rest_again() -> None:
    queries = ips(10)
    cut = iter([Reply("\n".join([BANNER, *map(row, queries[:4])]) + "\n", cut=True)])
    fake, sleeps = FakeCymru(lambda q: next(cut, None) or Reply(answer_all(q))), []
    batch = one_batch(client_for(fake, sleeps), queries)
    # The 4th row may have had more origin rows lost with the connection: asked again.
    assert fake.sessions == [queries, queries[3:]]
    assert batch.failed == [] and set(batch.answers) == set(queries)


def test_a_chunk_that_keeps_failing_is_split_down_to_min_split() -> None:
    queries = ips(200)
    poison = queries[120]  # any session holding it is reset

    def script(asked: list[str]) -> Reply | OSError:
        return ConnectionResetError("reset") if poison in asked else Reply(answer_all(asked))

    fake, sleeps = FakeCymru(script), []
    batch = one_batch(client_for(fake, sleeps, retries=1, batch_size=500), queries)
    sizes = [len(s) for s in fake.sessions]
    assert sizes == [200, 200, 100, 100, 50, 50]  # two tries, then halves down to 50
    assert batch.failed == queries[100:150]  # the 50 around the poison: left without answer
    assert set(batch.answers) == set(queries) - set(queries[100:150])


def test_a_garbled_line_leaves_its_query_unanswered_never_not_found() -> None:
    queries = ips(6)

    def script(asked: list[str]) -> Reply:
        lines = [BANNER, *(("%%garbage%%" if q == queries[2] else row(q)) for q in asked)]
        return Reply("\n".join(lines) + "\n")

    fake, sleeps = FakeCymru(script), []
    batch = one_batch(client_for(fake, sleeps, retries=1), queries)
    assert batch.failed == [queries[2]]  # an error, asked again, then reported failed
    assert queries[2] not in batch.answers
    assert batch.garbage == 2 and [len(s) for s in fake.sessions] == [6, 1]


def test_an_error_line_is_not_found_only_when_the_session_completes() -> None:
    queries = ips(3)
    text = "\n".join(
        [BANNER, row(queries[0]), "Error: no ASN or IP match on line 4.", row(queries[2])]
    )
    fake, sleeps = FakeCymru(lambda q: Reply(text + "\n")), []
    batch = one_batch(client_for(fake, sleeps), queries)
    assert batch.answers[queries[1]] == NOT_FOUND_IP and batch.failed == []


def test_connect_failures_in_a_row_mean_blocked() -> None:
    fake, sleeps = FakeCymru(refuse=100), []
    client = client_for(fake, sleeps, retries=2, blocked_after=3)
    batches = list(client.lookup(ips(300)))
    assert len(fake.addresses) == 3  # then no more connection attempts
    # Never sent: no answer at all (their old blocks stay), not an error.
    assert sorted(q for b in batches for q in b.unasked) == sorted(ips(300))
    assert [q for b in batches for q in b.failed + b.sent] == []
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert stop.value.reason == "unreachable" and stop.value.run_exit_code == 3
    assert "3 sessions in a row got no answer (connection refused)" in str(stop.value)


def test_sessions_that_connect_but_never_answer_trip_the_breaker_as_stalled() -> None:
    fake, sleeps = FakeCymru(lambda q: TimeoutError("timed out")), []
    client = client_for(fake, sleeps, retries=2, blocked_after=4, sessions=2)
    batches = list(client.lookup(ips(2000)))
    # Then no more sessions for any chunk (but one the other thread had already begun).
    assert 4 <= len(fake.sessions) <= 5
    sent = [q for b in batches for q in b.sent]
    assert sorted(sent) == sorted(q for b in batches for q in b.failed)  # sent: errors
    assert len(sent) + sum(len(b.unasked) for b in batches) == 2000
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert stop.value.reason == "stalled"
    assert "(no answer within 30 s)" in str(stop.value)


def test_a_host_name_that_does_not_resolve_is_named_so() -> None:
    def connect(address: tuple[str, int], timeout: float) -> FakeSocket:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    client = CymruClient(CymruSettings(host="nohost", blocked_after=2), [].append, connect)
    list(client.lookup(ips(10)))
    with pytest.raises(ServiceUnavailableError) as stop:
        client.check_blocked()
    assert "nohost:43: 2 sessions in a row got no answer (host name not found)" in str(stop.value)


def test_sessions_closed_without_a_line_count_as_failures() -> None:
    fake, sleeps = FakeCymru(lambda q: Reply("")), []
    client = client_for(fake, sleeps, retries=5, blocked_after=3)
    list(client.lookup(ips(10)))
    assert len(fake.sessions) == 3 and client.blocked


def test_an_answered_session_breaks_the_row_of_failures() -> None:
    replies = iter([TimeoutError(), TimeoutError(), None, TimeoutError(), TimeoutError()])
    fake, sleeps = FakeCymru(lambda q: next(replies, None) or Reply(answer_all(q))), []
    client = client_for(fake, sleeps, retries=2, blocked_after=3, batch_size=50)
    batches = list(client.lookup(ips(100)))
    assert not client.blocked and all(not b.failed for b in batches)
    client.check_blocked()


def test_a_connect_that_succeeds_resets_the_count() -> None:
    fake, sleeps = FakeCymru(refuse=2), []
    client = client_for(fake, sleeps, retries=3, blocked_after=3)
    batch = one_batch(client, ips(10))
    assert batch.failed == [] and not client.blocked
    client.check_blocked()


def test_cancel_opens_no_more_sessions() -> None:
    holder: list[CymruClient] = []

    def script(asked: list[str]) -> Reply:
        holder[0].cancel()  # the run is stopped while the first session is answered
        return Reply(answer_all(asked))

    fake, sleeps = FakeCymru(script), []
    client = client_for(fake, sleeps, batch_size=100)
    holder.append(client)
    batches = sorted(client.lookup(ips(400)), key=lambda b: b.number)
    assert len(fake.sessions) == 1 and batches[0].failed == []
    assert [len(b.unasked) for b in batches[1:]] == [100, 100, 100]  # never asked
    client.check_blocked()  # cancelled, not blocked: no error


# -- AS numbers named in the answers ---------------------------------------------------------


def as_row(query: str) -> str:
    """The verbose answer line of an ``AS<n>`` query."""
    number = int(query[2:])
    return f"{number:<8}| NL | ripencc  | 2001-05-17 | EXAMPLE-{number}, NL"


def test_named_as_numbers_go_out_beside_the_last_planned_chunk() -> None:
    """The AS numbers the IP answers name are asked as soon as a session is free, not in a
    second round after every IP chunk: with one slow chunk of IPs, they are answered while it
    still runs (before: they waited for it). Each is asked once; the lines number the planned
    chunks and the chunks of named AS numbers each on their own."""
    slow = ips(40)[-1]  # in the last chunk
    spans: dict[tuple[str, ...], list[float]] = {}
    lock = threading.Lock()

    def script(queries: list[str]) -> Reply:
        with lock:
            spans[tuple(queries)] = [time.monotonic()]
        if queries[0].startswith("AS"):
            text = "\n".join([BANNER, *(as_row(q) for q in queries)]) + "\n"
        else:
            time.sleep(0.6 if slow in queries else 0.05)
            text = answer_all(queries)
        with lock:
            spans[tuple(queries)].append(time.monotonic())
        return Reply(text)

    fake = FakeCymru(script)
    client = client_for(fake, [], sessions=2, batch_size=10, min_split=5)
    posted: list[Event] = []
    cymru_phase(client, ips(40), Tier1Plan(), posted.append)
    ip_spans = [span for queries, span in spans.items() if not queries[0].startswith("AS")]
    as_spans = [span for queries, span in spans.items() if queries[0].startswith("AS")]
    assert len(ip_spans) == 4 and as_spans
    assert min(start for start, _ in as_spans) < max(end for _, end in ip_spans)
    named = {64_500 + int(ip.rsplit(".", 1)[1]) for ip in ips(40)}
    asked = [q for session in fake.sessions if session[0].startswith("AS") for q in session]
    assert sorted(asked) == sorted(f"AS{n}" for n in named)  # each once
    lines = [event for event in posted if isinstance(event, BatchAnswered)]
    planned = [line.done for line in lines if line.total]
    late = [line.done for line in lines if not line.total]
    assert planned == [1, 2, 3, 4] and late == list(range(1, len(late) + 1))
    kinds = [bool(line.total) for line in lines]
    assert kinds.index(False) < len(kinds) - 1 - kinds[::-1].index(True)  # one before the slow
    assert sum(line.asns for line in lines) == len(named)


def test_named_as_numbers_count_as_unanswered_once_cymru_is_stopped() -> None:
    """A Team Cymru stopped by its breaker: the AS numbers its answers named before it was
    stopped are never sent, and each counts as an AS lookup without an answer."""
    slow = ips(40)[-1]

    def script(queries: list[str]) -> Reply | OSError:
        if slow in queries:
            return ConnectionResetError("reset by peer")
        return Reply(answer_all(queries))

    fake = FakeCymru(script)
    client = client_for(
        fake, [], sessions=2, batch_size=10, min_split=5, blocked_after=1, retries=0
    )
    posted: list[Event] = []
    with pytest.raises(ServiceUnavailableError):
        cymru_phase(client, ips(40), Tier1Plan(), posted.append)
    answered = {ip for session in fake.sessions if slow not in session for ip in session}
    named = {64_500 + int(ip.rsplit(".", 1)[1]) for ip in answered if not ip.startswith("AS")}
    sent = [q for session in fake.sessions for q in session if q.startswith("AS")]
    unanswered = sum(e.count for e in posted if isinstance(e, AsLookupsUnanswered))
    assert named and unanswered == len(named) - len(sent) > 0


def test_a_lookup_left_early_starts_no_more_sessions() -> None:
    """A caller that stops reading a lookup (it raised, or the run is stopping) starts none of
    the chunks still waiting (before: every queued chunk was still sent)."""
    fake = FakeCymru()
    client = client_for(fake, [], sessions=1, batch_size=10, min_split=5)
    for batch in client.lookup(ips(200)):
        assert batch.answers
        break
    assert len(fake.sessions) <= 2  # the one read, and at most the one already started
