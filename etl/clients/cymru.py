"""Team Cymru IP-to-ASN bulk whois client (SPEC 3.2; shared/protocols/cymru-whois.md).

One TCP session per chunk: ``begin``, ``verbose``, the queries, ``end``; answers are parsed as
they stream in and the session is read to EOF. Never a single-IP query, never DNS lookups of
IPs. A chunk whose session fails is retried with backoff, then split in halves (never below
`CymruSettings.min_split` queries), and what still has no answer is reported as failed.
Connect failures in a row mean we are probably blocked: `ServiceUnavailableError`, and no
retrying harder.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Final

from etl.errors import ServiceUnavailableError, SettingError

PREAMBLE: Final = ("begin", "verbose")
_ERROR_LINE = re.compile(r"^Error: .*\bline (\d+)\.?\s*$", re.IGNORECASE)
_AS_QUERY = re.compile(r"^AS(\d+)$")
_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
_REGISTRY = re.compile(r"^[A-Za-z]{2,10}$")


@dataclass(frozen=True)
class IpAnswer:
    """What Cymru said about one IP: ``asns`` empty means ``NA`` (not found)."""

    asns: tuple[int, ...]
    asn_org: str | None
    country: str | None
    registry: str | None
    prefix: str | None
    allocation_date: str | None

    @property
    def found(self) -> bool:
        """Whether an origin AS was announced for the IP."""
        return bool(self.asns)


@dataclass(frozen=True)
class AsAnswer:
    """What Cymru said about one AS (its registration, not any IP's location)."""

    name: str | None
    country: str | None
    registry: str | None
    allocation_date: str | None

    @property
    def found(self) -> bool:
        """Whether the AS is known."""
        return self.name is not None


Answer = IpAnswer | AsAnswer
NOT_FOUND_IP: Final = IpAnswer((), None, None, None, None, None)
NOT_FOUND_AS: Final = AsAnswer(None, None, None, None)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _blank(value: str) -> str | None:
    value = value.strip()
    return value or None


def _date(value: str) -> str | None:
    value = value.strip()
    return value if _DATE.match(value) else None


def _country(value: str) -> str | None:
    """An ISO country code, upper case; anything else is dropped (it feeds a VARCHAR(2))."""
    value = value.strip()
    return value.upper() if _COUNTRY.match(value) else None


def _registry(value: str) -> str | None:
    value = value.strip()
    return value.lower() if _REGISTRY.match(value) else None


class BulkParser:
    """Parses one session's answer lines and maps each to the query it answers.

    Rows are matched to queries by value (the parsed address, or the AS number), never by
    position, so a junk line can be counted and skipped but never attach data to another IP.
    """

    def __init__(self, queries: Sequence[str], preamble: int = len(PREAMBLE)) -> None:
        self.queries = list(queries)
        self.preamble = preamble
        self._ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        self._as: dict[int, int] = {}
        for index, query in enumerate(self.queries):
            matched = _AS_QUERY.match(query)
            if matched:
                self._as[int(matched.group(1))] = index
            else:
                self._ips[ipaddress.ip_address(query)] = index
        self.answers: dict[int, Answer] = {}
        self._errors: set[int] = set()
        self.garbage = 0
        self.last: int | None = None
        # The query the next line answers, counted as the lines come (one per query): only an
        # AS `NA` row needs it, as it does not echo the AS number it answers.
        self._next = 0

    def feed(self, line: str) -> None:
        """Take one response line (without its newline)."""
        text = line.strip()
        if not text or text.startswith("Bulk mode;"):
            return
        error = _ERROR_LINE.match(text)
        if error:
            self._error_line(int(error.group(1)))
            return
        fields = [part.strip() for part in text.split("|", 6)]
        if fields[0].upper() == "AS":
            return  # a header line
        if len(fields) == 7 and _is_address(fields[1]):
            self._ip_row(fields)  # the AS name keeps any "|" of its own
        elif len(fields) >= 5 and not _is_address(fields[1]):
            self._as_row([part.strip() for part in text.split("|", 4)])
        else:
            self._garbled()

    def _garbled(self) -> None:
        """A line that answers nothing: counted, and taken as the answer line of the next
        query (which then has no answer of its own, unless a row names it later)."""
        self.garbage += 1
        self._next += 1

    def _answered(self, index: int) -> None:
        self._errors.discard(index)
        self.last = index
        self._next = index + 1

    def _error_line(self, number: int) -> None:
        index = number - self.preamble - 1
        if 0 <= index < len(self.queries) and index not in self.answers:
            self._errors.add(index)
            self._next = index + 1
        elif not 0 <= index < len(self.queries):
            self._garbled()

    def _origins(self, field_text: str) -> tuple[int, ...] | None:
        if field_text.upper() == "NA":
            return ()
        parts = field_text.split()
        if not parts or not all(p.isdigit() and 0 < int(p) < 2**32 for p in parts):
            return None
        return tuple(int(p) for p in parts)

    def _ip_row(self, fields: list[str]) -> None:
        origins = self._origins(fields[0])
        try:
            index = self._ips.get(ipaddress.ip_address(fields[1]))
        except ValueError:
            index = None
        if origins is None or index is None:
            self._garbled()
            return
        name = _blank(fields[6])
        row = IpAnswer(
            asns=origins,
            asn_org=name if origins and name != "NA" else None,
            country=_country(fields[3]),
            registry=_registry(fields[4]),
            prefix=_blank(fields[2]) if origins and fields[2].upper() != "NA" else None,
            allocation_date=_date(fields[5]),
        )
        previous = self.answers.get(index)
        if isinstance(previous, IpAnswer) and previous.found:
            # Several origins: consecutive rows for one IP. The first row stays primary.
            extra = tuple(a for a in row.asns if a not in previous.asns)
            row = IpAnswer(previous.asns + extra, *_fields_of(previous))
        self.answers[index] = row
        self._answered(index)

    def _as_row(self, fields: list[str]) -> None:
        origins = self._origins(fields[0])
        if origins is None or len(origins) > 1:
            self._garbled()
            return
        if not origins:
            # An unknown AS answers `NA` without its number: it answers the query of this line,
            # when that is an AS query still without an answer; else the line is garbage.
            if self._next not in self._as.values() or self._next in self.answers:
                self._garbled()
                return
            self.answers[self._next] = NOT_FOUND_AS
            self._answered(self._next)
            return
        index = self._as.get(origins[0])
        if index is None:
            self._garbled()
            return
        name = _blank(fields[4])
        self.answers[index] = AsAnswer(
            name=name if name != "NA" else None,
            country=_country(fields[1]),
            registry=_registry(fields[2]),
            allocation_date=_date(fields[3]),
        )
        self._answered(index)

    def result(self, complete: bool) -> dict[str, Answer]:
        """Answers by query. ``complete``: the session reached EOF after ``end``.

        After a cut session the last answered query is dropped (more origin rows may have been
        lost with the connection). Error lines count as not found only for a complete session.
        A query without an answer of its own (a garbled line in its place) has no entry: it is
        an error, asked again, never `not_found` (SPEC 3.2), for ``AS<n>`` queries as for IPs.
        """
        answers = dict(self.answers)
        if not complete and self.last is not None:
            answers.pop(self.last, None)
        result = {self.queries[i]: answer for i, answer in answers.items()}
        if complete:
            as_indexes = set(self._as.values())
            for index in self._errors:
                result[self.queries[index]] = NOT_FOUND_AS if index in as_indexes else NOT_FOUND_IP
        return result


def _fields_of(answer: IpAnswer) -> tuple[str | None, ...]:
    return (
        answer.asn_org,
        answer.country,
        answer.registry,
        answer.prefix,
        answer.allocation_date,
    )


@dataclass(frozen=True)
class CymruSettings:
    """Where and how to talk to Team Cymru."""

    host: str = "whois.cymru.com"
    port: int = 43
    batch_size: int = 500
    sessions: int = 2
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 2
    backoff: float = 1.0
    min_split: int = 50
    blocked_after: int = 4  # connect failures in a row that mean "stop asking"

    @classmethod
    def parse_address(cls, address: str) -> tuple[str, int]:
        """``host:port`` (port 43 when omitted), the form of the cymru setting."""
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = address, "43"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingError("cymru", f"must be HOST:PORT, got {address!r}")
        return host, int(port)


@dataclass
class Batch:
    """The outcome of one chunk: answers by query, and the queries left without one."""

    number: int
    total: int
    queries: list[str]
    answers: dict[str, Answer] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    sessions: int = 0
    garbage: int = 0


class CymruClient:
    """Bulk whois over a bounded number of concurrent TCP sessions."""

    def __init__(
        self,
        settings: CymruSettings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._lock = threading.Lock()
        self._connect_failures = 0
        self.blocked = False
        self.cancelled = False
        self.sessions = 0

    def lookup(self, queries: Sequence[str]) -> Iterator[Batch]:
        """Answer every query, one `Batch` per chunk, yielded as chunks complete.

        Chunks hold at most ``batch_size`` queries; fewer queries than the sessions could take
        are spread over all of them (no chunk under `min_split`), so that they all work.
        """
        sessions = self.settings.sessions
        spread = max(-(-len(queries) // sessions), self.settings.min_split)
        size = min(self.settings.batch_size, spread)
        chunks = [list(queries[i : i + size]) for i in range(0, len(queries), size)]
        if not chunks:
            return
        with ThreadPoolExecutor(self.settings.sessions, thread_name_prefix="cymru") as pool:
            futures = [
                pool.submit(self._resolve, Batch(n, len(chunks), chunk))
                for n, chunk in enumerate(chunks, start=1)
            ]
            for future in as_completed(futures):
                yield future.result()

    def _resolve(self, batch: Batch) -> Batch:
        remaining = list(batch.queries)
        for attempt in range(self.settings.retries + 1):
            if attempt:
                self._sleep(self.settings.backoff * 2 ** (attempt - 1))
            remaining = self._ask(batch, remaining)
            if not remaining or self.blocked:
                break
        batch.failed = self._split(batch, remaining)
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
        """One session for ``queries``; record answers, return the queries left unanswered."""
        if self.blocked:
            return queries
        parser = BulkParser(queries)
        complete = self._session(queries, parser)
        batch.sessions += 1
        batch.garbage += parser.garbage
        batch.answers.update(parser.result(complete))
        return [q for q in queries if q not in batch.answers]

    def _session(self, queries: list[str], parser: BulkParser) -> bool:
        """Run one bulk session; True when it ended with EOF after ``end``."""
        settings = self.settings
        with self._lock:
            self.sessions += 1
        try:
            sock = socket.create_connection(
                (settings.host, settings.port), timeout=settings.connect_timeout
            )
        except OSError:
            self._connect_failed()
            return False
        with self._lock:
            self._connect_failures = 0
        request = "\n".join([*PREAMBLE, *queries, "end"]) + "\n"
        try:
            with sock:
                sock.settimeout(settings.read_timeout)
                sock.sendall(request.encode("ascii"))
                pending = b""
                while chunk := sock.recv(65536):
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        parser.feed(line.decode("utf-8", "replace"))
                if pending:
                    parser.feed(pending.decode("utf-8", "replace"))
        except OSError:
            return False
        return True

    def _connect_failed(self) -> None:
        with self._lock:
            self._connect_failures += 1
            if self._connect_failures >= self.settings.blocked_after:
                self.blocked = True

    def cancel(self) -> None:
        """Open no more sessions (the run is stopping); chunks not asked end as failed."""
        self.blocked = True
        self.cancelled = True

    def check_blocked(self) -> None:
        """Raise `ServiceUnavailableError` when sessions kept failing to connect."""
        if self.blocked and not self.cancelled:
            raise ServiceUnavailableError(
                f"Team Cymru at {self.settings.host}:{self.settings.port} refused or timed out "
                f"{self.settings.blocked_after} connections in a row: stopped asking it this run"
            )
