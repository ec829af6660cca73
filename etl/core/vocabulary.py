"""The words a run's data is made of, declared once: the sources, the blocks of
``ip_inventory.enrichment``, and the statuses of a source's answer.

Every layer reads them from here: the selection and the write path (`etl.db`), the merge and
the commit (`etl.refresh`), the summary, the metrics and the run log's columns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Source(StrEnum):
    """The enrichment sources a run can ask, each with its block in the enrichment JSON."""

    MAXMIND = "maxmind"
    CYMRU = "cymru"
    GREYNOISE = "greynoise"
    CLASSIFICATION = "classification"  # the infrastructure labels (SPEC 3.4)


# Each source's name in a sentence.
TITLES: Final[dict[str, str]] = {
    Source.MAXMIND: "MaxMind",
    Source.CYMRU: "Cymru",
    Source.GREYNOISE: "GreyNoise",
    Source.CLASSIFICATION: "the labels",
}
# Each source's block in ip_inventory.enrichment, where it is not the source's name
# (cowrieprocessor's key for the labels).
BLOCK_KEYS: Final[dict[str, str]] = {Source.CLASSIFICATION: "ip_classification"}


def block_of(source: str) -> str:
    """The key of ``source``'s block in the enrichment JSON (and of its frame column)."""
    return BLOCK_KEYS.get(source, str(source))


# Every source, in the order a run asks them, reports them and stores their counts.
SOURCES: Final[tuple[Source, ...]] = tuple(Source)
# The sources asked over the network: their answers are paid for (kept when a run stops).
NETWORK_SOURCES: Final[tuple[Source, ...]] = (Source.CYMRU, Source.GREYNOISE)
# The blocks of ip_inventory.enrichment a run writes: the validation block, then each source's.
BLOCKS: Final[tuple[str, ...]] = ("validation", *(block_of(source) for source in SOURCES))
# The sources whose answer makes a row freshly enriched (enrichment_updated_at, cowrieprocessor's
# clock for its own refresh): not the labels, which come from lists on disk.
ENRICHING: Final[tuple[Source, ...]] = (Source.MAXMIND, Source.CYMRU, Source.GREYNOISE)

# What a source's answer for one IP was (its block's ``status``, and the summary's counts).
STATUSES: Final = ("ok", "not_found", "error", "skipped")
# The statuses that are an answer: the block is fresh for its TTL.
ANSWERED: Final = ("ok", "not_found")
