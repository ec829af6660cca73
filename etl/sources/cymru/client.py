"""Team Cymru IP-to-ASN bulk whois client (SPEC 3.2; shared/protocols/cymru-whois.md).

One TCP session per chunk: ``begin``, ``verbose``, the queries, ``end``; answers are parsed as
they stream in and the session is read to EOF. Never a single-IP query, never DNS lookups of
IPs. A chunk whose session fails is retried with backoff, then split in halves (never below
`CymruSettings.min_split` queries), and what still has no answer is reported as failed, with
why its last session left it without one (`Batch.reasons`: the session's failure, e.g.
"connection reset without an answer", or for a session that ended normally "no answer line" /
"unreadable answer line").

A circuit breaker: `CymruSettings.blocked_after` sessions in a row that failed (refused, name
not found, no connection, connected but no answer at all, or a session that ended in the read
timeout, however many lines it answered first) stop the service for the run
(`ServiceUnavailableError`, reason ``unreachable`` or ``stalled``): we are probably blocked or
the service is down, and retrying harder would only make it worse. A bounded time without
progress (`ProgressWatch`, `CymruSettings.stall_window`): when a session fails and no query got
a kept answer for that long, the service is ``stalled`` and stopped too. Queries never sent
(`Batch.unasked`) get no answer at all.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Final, Protocol

from etl.core.addresses import is_ip_address
from etl.core.errors import ServiceUnavailableError, SettingError
from etl.sources.cymru.wire import (
    NO_ANSWER_LINE,
    NOT_FOUND_AS,
    NOT_FOUND_IP,
    PREAMBLE,
    UNREADABLE_LINE,
    Answer,
    AsAnswer,
    BulkParser,
    IpAnswer,
)
from etl.sources.failures import (
    RETRY_BACKOFF,
    CircuitBreaker,
    Failure,
    ProgressWatch,
    connection_failure,
)

__all__ = [
    "NOT_FOUND_AS",
    "NOT_FOUND_IP",
    "NO_ANSWER_LINE",
    "PREAMBLE",
    "UNREADABLE_LINE",
    "Answer",
    "AsAnswer",
    "Batch",
    "BulkParser",
    "Connect",
    "Connection",
    "CymruClient",
    "CymruSettings",
    "IpAnswer",
]


class Connection(Protocol):
    """What a session needs of its socket."""

    def settimeout(self, value: float | None, /) -> None:
        """Timeout of each later call, in seconds."""

    def sendall(self, data: bytes, /) -> None:
        """Send all of ``data``."""

    def recv(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; empty at EOF."""
        ...

    def close(self) -> None:
        """Close the connection."""


Connect = Callable[[tuple[str, int], float], Connection]
"""Opens a connection to ``(host, port)`` within a timeout (`socket.create_connection`)."""


PORT: Final = 43  # Team Cymru's bulk whois port, also when the address names none
_HOST_NAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


@dataclass(frozen=True)
class CymruSettings:
    """Where and how to talk to Team Cymru. Each default here is the run's too
    (`etl.refresh.config.RefreshConfig` takes its ``cymru``, ``batch_size``, ``cymru_sessions``,
    ``cymru_timeout`` and ``retry_backoff`` defaults from ``CymruSettings()``)."""

    host: str = "whois.cymru.com"
    port: int = PORT
    batch_size: int = 500
    sessions: int = 2
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 2
    backoff: float = RETRY_BACKOFF
    min_split: int = 50  # the fewest queries a split chunk may have (at most a quarter of a batch)
    blocked_after: int = 4  # failed sessions in a row that mean "stop asking"

    @property
    def stall_window(self) -> float:
        """Seconds without a kept answer after which Cymru is ``stalled``: three read timeouts
        and the longest backoff (a healthy service answers a line every few ms; a dead one
        trips the breaker first, after two rounds of timeouts)."""
        return 3 * self.read_timeout + self.backoff * float(2 ** max(self.retries - 1, 0))

    @property
    def address(self) -> str:
        """``host:port``, the form of the cymru setting."""
        return f"{self.host}:{self.port}"

    @classmethod
    def parse_address(cls, address: str) -> tuple[str, int]:
        """``host:port`` (port 43 when omitted), the form of the cymru setting: a host name or
        IP address and a port from 1 to 65535, else `SettingError` (a typo is exit 2 at once,
        not a failed lookup per IP later). The one check of that setting."""
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, str(PORT)
        named = bool(_HOST_NAME.fullmatch(host)) or is_ip_address(host)
        if not (named and port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise SettingError("cymru", f"must be HOST:PORT, got {address[:80]!r}")
        return host, int(port)


@dataclass
class Batch:
    """The outcome of one chunk: answers by query; the queries sent but left without one
    (``failed``) and why each was (``reasons``, from its last session); those never sent,
    because the service was stopped first (``unasked``)."""

    number: int
    total: int
    queries: list[str]
    answers: dict[str, Answer] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    unasked: list[str] = field(default_factory=list)
    sessions: int = 0
    garbage: int = 0
    asked: set[str] = field(default_factory=set)

    @property
    def sent(self) -> list[str]:
        """The queries that went to the service (answered or failed), in query order."""
        unasked = set(self.unasked)
        return [q for q in self.queries if q not in unasked]


# A Team Cymru that still answers, but fewer queries than this within a stall window (92 s
# by default), is stopped as ``stalled``: a healthy one answers hundreds of lines a second,
# and at 97 ms a line still about 950 in a window (`ProgressWatch.trickling`).
TRICKLE_FLOOR: Final = 10


class BulkLookup:
    """A bulk lookup under way (`CymruClient.lookup`): its chunks, yielded as they complete.

    Between two chunks the caller may `add` queries (Tier 1's ``AS<n>`` for the AS numbers
    an answer named): they wait until a session would otherwise be idle (every chunk of the
    lookup started, fewer running than the sessions), then go out together, in chunks of
    their own (`Batch.total` 0: not planned). So they ride along with the lookup's last
    chunks instead of a second round after it, and add as few sessions as they can.
    """

    def __init__(self, client: CymruClient, queries: Sequence[str]) -> None:
        self.client = client
        self.planned = client.chunks(queries)
        self.waiting: list[str] = []  # added, not sent yet
        self.number = 0

    def add(self, queries: Sequence[str]) -> None:
        """Ask ``queries`` too (once the client stopped asking, they come back unasked)."""
        self.waiting.extend(queries)

    def __iter__(self) -> Iterator[Batch]:
        client = self.client
        if not self.planned and not self.waiting:
            return
        if not client.sessions:
            client.progress.begin()
        pool = ThreadPoolExecutor(client.settings.sessions, thread_name_prefix="cymru")
        ended = False
        try:
            running = {self._submit(pool, chunk, len(self.planned)) for chunk in self.planned}
            while running or self.waiting:
                if self.waiting and len(running) < client.settings.sessions:
                    added, self.waiting = self.waiting, []
                    running |= {self._submit(pool, chunk, 0) for chunk in client.chunks(added)}
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
            ended = True
        finally:  # left early (the caller raised or stopped reading): start no more sessions
            pool.shutdown(wait=True, cancel_futures=not ended)

    def _submit(self, pool: ThreadPoolExecutor, chunk: list[str], total: int) -> Future[Batch]:
        self.number += 1
        return pool.submit(self.client._resolve, Batch(self.number, total, chunk))


class _TricklingError(Exception):
    """Raised inside a session when Cymru answers almost nothing (`TRICKLE_FLOOR`)."""


class CymruClient:
    """Bulk whois over a bounded number of concurrent TCP sessions."""

    def __init__(
        self,
        settings: CymruSettings,
        sleep: Callable[[float], None] = time.sleep,
        connect: Connect | None = None,
    ) -> None:
        """``connect`` opens each session's connection (by default a TCP socket); ``sleep``
        waits out the backoff."""
        self.settings = settings
        self._sleep = sleep
        self._connect: Connect = connect or socket.create_connection
        self._lock = threading.Lock()
        self.breaker = CircuitBreaker(settings.blocked_after)
        self.progress = ProgressWatch(settings.stall_window, floor=TRICKLE_FLOOR)
        self.stall: Failure | None = None  # the failure that found Cymru stalled (the watch)
        self.trickle: Failure | None = None  # Cymru answered, but almost nothing (the watch)
        self.cancelled = False
        self.sessions = 0

    @property
    def blocked(self) -> bool:
        """No more sessions: the breaker tripped, or the run is stopping."""
        return self.cancelled or self.breaker.tripped is not None

    def lookup(self, queries: Sequence[str]) -> BulkLookup:
        """Answer every query, one `Batch` per chunk, yielded as chunks complete; queries
        added while it runs (`BulkLookup.add`) go out in chunks of their own.

        Chunks hold at most ``batch_size`` queries; fewer queries than the sessions could take
        are spread over all of them (no chunk under `min_split`), so that they all work.
        """
        return BulkLookup(self, queries)

    def chunks(self, queries: Sequence[str]) -> list[list[str]]:
        """``queries`` in chunks of at most ``batch_size``, spread over every session."""
        spread = max(-(-len(queries) // self.settings.sessions), self.settings.min_split)
        size = min(self.settings.batch_size, spread)
        return [list(queries[i : i + size]) for i in range(0, len(queries), size)]

    def _resolve(self, batch: Batch) -> Batch:
        remaining = list(batch.queries)
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self._sleep(self.settings.backoff * 2 ** (attempt - 1))
            remaining = self._ask(batch, remaining)
            if not remaining or self.blocked:
                break
        remaining = self._split(batch, remaining)
        batch.failed = [q for q in remaining if q in batch.asked]
        batch.unasked = [q for q in remaining if q not in batch.asked]
        batch.reasons = {q: batch.reasons.get(q, NO_ANSWER_LINE) for q in batch.failed}
        return batch

    def _split(self, batch: Batch, queries: list[str]) -> list[str]:
        """Ask halves in their own sessions, down to `min_split` queries; return what failed."""
        if len(queries) < 2 * self.settings.min_split or self.blocked:
            return queries
        middle = len(queries) // 2
        failed: list[str] = []
        for half in (queries[:middle], queries[middle:]):
            failed += self._split(batch, self._ask(batch, half))
        return failed

    def _ask(self, batch: Batch, queries: list[str]) -> list[str]:
        """One session for ``queries``; record answers, return the queries left unanswered
        (and why, in ``batch.reasons``)."""
        if self.blocked:
            return queries
        parser = BulkParser(queries)
        connected, failure = self._session(queries, parser)
        batch.sessions += 1
        batch.garbage += parser.garbage
        if connected:
            batch.asked.update(queries)
        answers = parser.result(complete=failure is None)
        batch.answers.update(answers)
        self._judge(connected, failure, bool(parser.answers), bool(answers))
        left = [q for q in queries if q not in batch.answers]
        batch.reasons.update(
            dict.fromkeys(left, failure.words) if failure else parser.why_unanswered(left)
        )
        return left

    def _judge(self, connected: bool, failure: Failure | None, lines: bool, kept: bool) -> None:
        """Count a session for the breaker (`_counted`) and the progress watch: a session
        without a kept answer after the watch's window stops Cymru as ``stalled``."""
        if kept:
            self.progress.delivered()
        counted = _counted(connected, failure, lines, kept)
        if counted is not None:
            self.breaker.failed(counted)
        elif kept:
            self.breaker.succeeded()
        if not kept and self.breaker.tripped is None and self.progress.stalled():
            self.stall = self.stall or counted or failure or Failure(NO_ANSWER_LINE, True)
            self.breaker.trip(self.stall)

    def _session(self, queries: list[str], parser: BulkParser) -> tuple[bool, Failure | None]:
        """Run one bulk session: (connected, what went wrong: None when it ended with EOF
        after ``end``)."""
        settings = self.settings
        with self._lock:
            self.sessions += 1
        try:
            sock = self._connect((settings.host, settings.port), settings.connect_timeout)
        except OSError as exc:
            return False, connection_failure(exc, False, settings.connect_timeout)
        request = "\n".join([*PREAMBLE, *queries, "end"]) + "\n"
        try:
            self._exchange(sock, request, parser)
        except _TricklingError:
            window = f"{self.progress.window:g}"
            self.trickle = Failure(f"fewer than {TRICKLE_FLOOR} queries answered in {window} s",
                                   stalled=True, partial=True)  # fmt: skip
            self.breaker.trip(self.trickle)
            return True, self.trickle
        except OSError as exc:
            return True, connection_failure(exc, True, settings.read_timeout)
        finally:
            sock.close()
        return True, None

    def _exchange(self, sock: Connection, request: str, parser: BulkParser) -> None:
        """Send ``request``; feed each answer line to ``parser``, up to EOF. An answer is
        progress once a later one came (the last of a cut session is dropped). Raises
        `_TricklingError` when the answers come too slowly to be of use (`TRICKLE_FLOOR`)."""
        sock.settimeout(self.settings.read_timeout)
        sock.sendall(request.encode("ascii"))
        pending = b""
        kept = 0
        while chunk := sock.recv(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                parser.feed(line.decode("utf-8", "replace"))
            if len(parser.answers) - 1 > kept:
                self.progress.delivered(answers=len(parser.answers) - 1 - kept)
                kept = len(parser.answers) - 1
            if self.progress.trickling():
                raise _TricklingError
        if pending:
            parser.feed(pending.decode("utf-8", "replace"))

    def cancel(self) -> None:
        """Open no more sessions (the run is stopping); queries not sent end as unasked."""
        self.cancelled = True

    def check_blocked(self) -> None:
        """Raise `ServiceUnavailableError` when the breaker stopped the service this run."""
        failure = self.breaker.tripped
        if failure is None or self.cancelled:
            return
        where = f"Team Cymru at {self.settings.host}:{self.settings.port}"
        if self.trickle is not None:
            what = f"it answers, but almost nothing: {self.trickle.words}"
        elif self.stall is not None:
            what = (
                f"no query answered for {self.progress.window:g} s "
                f"(last session: {self.stall.words})"
            )
        else:
            how = "stalled after a partial answer" if failure.partial else "got no answer"
            what = f"{self.breaker.limit} sessions in a row {how} ({failure.words})"
        raise ServiceUnavailableError(
            f"{where}: {what}: stopped asking it for this run; "
            "the IPs not asked keep their old blocks",
            "stalled" if self.stall or self.trickle else self.breaker.stop_reason(),
        )


def _counted(connected: bool, failure: Failure | None, lines: bool, kept: bool) -> Failure | None:
    """The failure a session counts as for the breaker, or None: a session that did not
    connect, ended in a timeout (``partial`` when ``lines`` answered first), was cut without
    any answer line, or ended normally without a kept answer. A session cut by a reset after
    some answer lines is asked again, not counted."""
    if not connected:
        return failure
    if failure is None:
        return None if kept else Failure("connection closed without an answer", stalled=True)
    if not lines:
        return failure
    if failure.stalled:
        return Failure(failure.words, stalled=True, partial=True)
    return None
