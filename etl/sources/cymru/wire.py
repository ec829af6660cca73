"""Team Cymru bulk whois answers and their parser (shared/protocols/cymru-whois.md): the
lines of one session mapped to the queries they answer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from etl.core.addresses import is_ip_address

PREAMBLE: Final = ("begin", "verbose")
# Why a query of a session that ended normally has no answer (the cymru block's ``error``).
NO_ANSWER_LINE: Final = "no answer line"
UNREADABLE_LINE: Final = "unreadable answer line"
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
        self._unreadable: set[int] = set()  # queries with a rejected line in place of their own
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
        if len(fields) == 7 and is_ip_address(fields[1]):
            self._ip_row(fields)  # the AS name keeps any "|" of its own
        elif len(fields) >= 5 and not is_ip_address(fields[1]):
            self._as_row([part.strip() for part in text.split("|", 4)])
        else:
            self._garbled()

    def _garbled(self) -> None:
        """A line that answers nothing: counted, and taken as the answer line of the next
        query (which then has no answer of its own, unless a row names it later)."""
        self.garbage += 1
        if self._next < len(self.queries):
            self._unreadable.add(self._next)
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

    def why_unanswered(self, queries: Iterable[str]) -> dict[str, str]:
        """Why each of ``queries``, left without an answer by a session that ended normally,
        has none: a line the parser rejected stood in its place, or no line came for it."""
        unreadable = {self.queries[index] for index in self._unreadable}
        return {q: UNREADABLE_LINE if q in unreadable else NO_ANSWER_LINE for q in queries}


def _fields_of(answer: IpAnswer) -> tuple[str | None, ...]:
    return (
        answer.asn_org,
        answer.country,
        answer.registry,
        answer.prefix,
        answer.allocation_date,
    )
