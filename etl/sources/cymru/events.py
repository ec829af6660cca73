"""What Team Cymru's phase counts, posted to the main thread as `etl.sources.events.Counted`."""

from __future__ import annotations

from dataclasses import dataclass

from etl.sources.events import Counted


@dataclass(frozen=True)
class BatchAnswered(Counted):
    """Team Cymru answered its ``done``-th chunk of ``total`` planned (0: a chunk of AS
    numbers that the answers named, not planned): ``enriched`` IPs, ``failed`` IPs sent
    without an answer, ``asns`` AS numbers' registration data of ``asns_asked`` asked."""

    done: int
    total: int
    enriched: int
    failed: int
    asns: int = 0
    asns_asked: int = 0

    def counts(self) -> dict[str, int]:
        """One batch more, and the AS numbers it asked."""
        return {"cymru_batches": 1, "asn_asked": self.asns_asked}

    def line(self) -> str:
        """The log line (users grep it: keep the wording)."""
        failed = f", {self.failed} failed" if self.failed else ""
        asns = f", {self.asns} ASNs" if self.asns else ""
        of = f"/{self.total}" if self.total else " (AS numbers named in the answers)"
        return f"Cymru batch {self.done}{of}: {self.enriched} IPs enriched{failed}{asns}"


@dataclass(frozen=True)
class AsLookupsUnanswered(Counted):
    """``count`` Tier 1 ``AS<n>`` queries of a Team Cymru chunk got no answer (sent without
    one, or never sent because Cymru was stopped)."""

    count: int

    def counts(self) -> dict[str, int]:
        """The AS lookups without an answer."""
        return {"cymru_as_lookups_failed": self.count}
