"""The Team Cymru phase: the IPs lacking an ASN and Tier 1 (AS registration data) in the same
bulk sessions, run in a thread by `etl.refresh.runner`; it only posts events (`etl.sources.events`).

`tier1_plan` decides, on the main thread, which ASNs to ask: every ASN of asn_inventory whose
registration data is missing or older than 90 days, and MaxMind's ASNs of this run not known
fresh; for IPs named by address (`NAMED_IPS`), only their own ASNs, and none when none was
selected. ASNs that only Cymru's answers reveal are asked as soon as a session is free
(`BulkLookup.add`), beside the last planned chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import polars as pl

from etl.core.clock import Clock, utc_now
from etl.core.freshness import Freshness
from etl.core.vocabulary import Source
from etl.db.database import Database
from etl.db.select import asn_details_state
from etl.db.write import MAX_PG_INTEGER
from etl.sources.cymru.client import Batch, Connect, CymruClient, CymruSettings
from etl.sources.cymru.events import AsLookupsUnanswered, BatchAnswered
from etl.sources.cymru.steps import (
    NAMED_IPS,
    as_queries,
    asn_details,
    cymru_results,
    cymru_targets,
    split_batch,
)
from etl.sources.events import (
    AsnDetailsAnswered,
    Informed,
    PartAnswered,
    Post,
    Progressed,
)
from etl.sources.network import Phase, WouldAsk


@dataclass(frozen=True)
class Tier1Plan:
    """The ASNs to ask about (``wanted``) and those whose registration data is ``fresh``."""

    wanted: tuple[int, ...] = ()
    fresh: frozenset[int] = frozenset()


def storable(asns: Iterable[int]) -> set[int]:
    """AS numbers that fit asn_inventory.asn_number (a 32-bit signed integer on PostgreSQL)."""
    return {asn for asn in asns if 0 < asn <= MAX_PG_INTEGER}


def tier1_plan(db: Database, frame: pl.DataFrame, now: datetime, freshness: Freshness) -> Tier1Plan:
    """Which ASNs this run asks Team Cymru about (stale in asn_inventory, or MaxMind's ASNs of
    ``frame`` not known fresh); for a frame of IPs named by address (`NAMED_IPS`), only
    MaxMind's ASNs of ``frame`` not known fresh: the rest of asn_inventory is left alone."""
    fresh, stale = asn_details_state(db, now, freshness)
    known = storable(frame["maxmind_asn"].drop_nulls().unique().to_list())
    others = set() if NAMED_IPS in frame.columns else storable(stale)
    return Tier1Plan(tuple(sorted(others | (known - fresh))), frozenset(fresh))


class CymruSource:
    """Team Cymru as a run asks it (`etl.sources.network.NetworkSource`): the IPs MaxMind has
    no ASN for, and Tier 1 (`tier1_plan`) in the same bulk sessions."""

    name = Source.CYMRU

    def __init__(
        self,
        settings: CymruSettings,
        freshness: Freshness,
        clock: Clock,
        connect: Connect | None = None,
    ) -> None:
        """``connect``: how a session connects (by default a TCP socket; tests pass their own)."""
        self.settings, self.freshness, self.clock = settings, freshness, clock
        self.connect = connect
        self.tier1 = Tier1Plan()
        self.client: CymruClient | None = None

    def targets(self, frame: pl.DataFrame) -> list[str]:
        """The IPs to ask: stale cymru block, valid and global, no MaxMind ASN."""
        return cymru_targets(frame)

    def plan(self, db: Database, frame: pl.DataFrame, now: datetime) -> None:
        """The ASNs Tier 1 asks along with the IPs (`tier1_plan`)."""
        self.tier1 = tier1_plan(db, frame, now, self.freshness)

    def would_ask(self, ips: list[str]) -> WouldAsk:
        """Every IP, and the planned AS numbers."""
        words = f"Team Cymru about {len(ips)} IPs and {len(self.tier1.wanted)} AS numbers"
        return WouldAsk(len(ips), 0, words)

    def phase(self, ips: list[str]) -> Phase | None:
        """The bulk sessions for ``ips`` and Tier 1; None when neither has anything to ask."""
        plan = self.tier1
        if not ips and not plan.wanted:
            return None
        client = self.client = CymruClient(self.settings, connect=self.connect)
        body = partial(cymru_phase, client, ips, plan, clock=self.clock)
        detail = f"{len(ips)} IPs and {len(plan.wanted)} AS numbers to ask"
        return Phase(self.name, len(cymru_queries(ips, plan)), body, client.cancel, detail)

    def sample(self) -> None:
        """Team Cymru bills nothing."""

    def finish(self) -> Mapping[str, object]:
        """The bulk sessions tried (refused and retried ones too)."""
        return {} if self.client is None else {"cymru_sessions": self.client.sessions}


def cymru_queries(ips: list[str], plan: Tier1Plan) -> list[str]:
    """The phase's query lines: the IPs, then ``AS<n>`` for the wanted ASNs."""
    return ips + as_queries(list(plan.wanted))


def cymru_phase(
    client: CymruClient, ips: list[str], plan: Tier1Plan, post: Post, clock: Clock = utc_now
) -> None:
    """Ask Team Cymru about ``ips`` and the plan's ASNs, in bulk chunks; post each answered
    chunk as it comes (cached at the time ``clock`` gives then). The ASNs only Cymru's
    answers name are asked as soon as a session is free (`BulkLookup.add`), beside the last
    planned chunks; once Cymru was stopped, they count as AS lookups without an answer.

    Raises `ServiceUnavailableError` when its circuit breaker stopped it.
    """
    lines = BatchLines(post, clock)
    lookup = client.lookup(cymru_queries(ips, plan))
    known = set(plan.wanted) | plan.fresh  # asked already, or fresh
    for batch in lookup:
        named = storable(lines.answered(batch, planned=batch.total)) - known
        _post_unanswered(batch, post)
        if not batch.total:
            continue  # a chunk of AS numbers the answers named: no IP in it
        post(Progressed("cymru", len(batch.sent)))
        if not named:
            continue
        known |= named
        if client.blocked:  # never sent: the service was stopped
            post(AsLookupsUnanswered(len(named)))
        else:
            post(Informed(f"cymru: {len(named)} more AS numbers to ask, named in the answers"))
            lookup.add(as_queries(sorted(named)))
    client.check_blocked()


def _post_unanswered(batch: Batch, post: Post) -> None:
    """Post how many of a chunk's ``AS<n>`` queries got no answer (failed or never sent)."""
    missed = sum(1 for q in [*batch.failed, *batch.unasked] if q.startswith("AS"))
    if missed:
        post(AsLookupsUnanswered(missed))


class BatchLines:
    """Posts the answers of each chunk that was sent, numbered as they come, each kind on its
    own: the ``i`` of "Cymru batch i/n" counts the planned chunks sent, ``n`` is the chunks
    planned, known before the first is sent; the chunks of AS numbers that the answers named
    ("Cymru batch j (AS numbers named in the answers)") count from 1 again. The last ``i``
    and the last ``j`` add up to the summary's batch count."""

    def __init__(self, post: Post, clock: Clock = utc_now) -> None:
        self.post = post
        self.clock = clock
        self.done = {True: 0, False: 0}  # chunks sent: planned, named in the answers

    def answered(self, batch: Batch, planned: int) -> set[int]:
        """Post ``batch``'s IP rows and Tier 1 rows (``planned``: the chunks planned, 0 for
        one not planned); return the ASNs its IP answers name."""
        if not batch.sent:
            return set()
        self.done[bool(planned)] += 1
        ip_batch, as_batch = split_batch(batch)
        asns = _post_details(as_batch, self.post, self.clock())
        enriched, failed = len(ip_batch.answers), len(ip_batch.failed)
        asked, done = len(as_batch.sent), self.done[bool(planned)]
        self.post(BatchAnswered(done, planned, enriched, failed, asns, asked))
        if not ip_batch.sent:
            return set()
        part = cymru_results(ip_batch, self.clock())
        self.post(PartAnswered("cymru", part))
        return set(part["cymru_asn"].drop_nulls().to_list())


def _post_details(batch: Batch, post: Post, now: datetime) -> int:
    """Post the Tier 1 rows of a chunk's ``AS<n>`` answers (errors are asked again later);
    return how many were answered."""
    if not batch.sent:
        return 0
    details = asn_details(batch).filter(pl.col("status") != "error")
    if details.height:
        post(AsnDetailsAnswered(with_details_block(details, now)))
    return details.height


def with_details_block(details: pl.DataFrame, cached_at: datetime) -> pl.DataFrame:
    """Add the ``details`` JSON block (organization, country, registry, allocation, status)."""
    block = pl.struct(
        pl.col("organization_name").alias("asn_org"),
        pl.col("organization_country").alias("country"),
        pl.col("rir_registry").alias("registry"),
        pl.col("allocation_date"),
        pl.col("status"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    )
    return details.with_columns(block.struct.json_encode().alias("details"))
