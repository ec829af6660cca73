"""Cymru steps: the ASN fallback for IPs MaxMind has no ASN for, and AS registration details.

`cymru_targets` picks the IPs to send (stale cymru block, not a bogon, no MaxMind ASN after this
run's MaxMind step); `cymru_results` turns a client `Batch` into frame rows with the ``cymru``
block (SPEC 2.1); `lookup_cymru` does both for a whole frame (notebooks, tests).
`asn_details` turns ``AS<n>`` answers into asn_inventory organization rows (Tier 1).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from etl.sources.cymru.client import NO_ANSWER_LINE, AsAnswer, Batch, CymruClient, IpAnswer

CYMRU_COLUMNS: dict[str, pl.DataType] = {
    "ip": pl.String(),
    "cymru_asn": pl.Int64(),
    "cymru_asns": pl.List(pl.Int64()),
    "cymru_asn_org": pl.String(),
    "cymru_country": pl.String(),
    "cymru_registry": pl.String(),
    "cymru_prefix": pl.String(),
    "cymru_allocation_date": pl.String(),
    "cymru_error": pl.String(),  # why an ``error`` has no answer (null for other statuses)
    "cymru_status": pl.String(),
}
# A selection frame of IPs named by address (the only_ips setting) has this column (True on
# every row, present even when the frame is empty): Tier 1 then asks only about their own ASNs.
NAMED_IPS = "named_ip"
ASN_DETAIL_COLUMNS: dict[str, pl.DataType] = {
    "asn_number": pl.Int64(),
    "organization_name": pl.String(),
    "organization_country": pl.String(),
    "rir_registry": pl.String(),
    "allocation_date": pl.String(),
    "status": pl.String(),
}


def maxmind_asn_after_run(frame: pl.DataFrame) -> pl.Expr:
    """MaxMind's ASN for each IP: this run's answer when MaxMind was asked, else the stored one."""
    if "maxmind_status" not in frame.columns:
        return pl.col("old_maxmind_asn")
    return (
        pl.when(pl.col("maxmind_status").is_not_null())
        .then(pl.col("maxmind_asn"))
        .otherwise(pl.col("old_maxmind_asn"))
    )


def cymru_targets(frame: pl.DataFrame) -> list[str]:
    """The IPs to ask Team Cymru: stale cymru block, valid and global, and no MaxMind ASN."""
    wanted = pl.col("stale_cymru") & ~pl.col("is_bogon") & maxmind_asn_after_run(frame).is_null()
    return frame.filter(wanted)["ip"].to_list()


def cymru_results(batch: Batch, cached_at: datetime) -> pl.DataFrame:
    """Frame rows for one answered chunk: the cymru columns and the ``cymru`` JSON block.

    IPs sent without a usable answer get ``status: error`` and why (``error``, from
    `Batch.reasons`; never fresh, asked again next run); IPs never sent (the service was
    stopped first) get no row: their blocks stay.
    """
    rows: list[tuple[object, ...]] = []
    for query in batch.sent:
        answer = batch.answers.get(query)
        if isinstance(answer, IpAnswer):
            asns = list(answer.asns)
            status = "ok" if answer.found else "not_found"
            rows.append(
                (
                    query,
                    asns[0] if asns else None,
                    asns,
                    answer.asn_org,
                    answer.country,
                    answer.registry,
                    answer.prefix,
                    answer.allocation_date,
                    None,
                    status,
                )
            )
        else:
            reason = batch.reasons.get(query, NO_ANSWER_LINE)
            rows.append((query, None, [], None, None, None, None, None, reason, "error"))
    frame = pl.DataFrame(rows, schema=CYMRU_COLUMNS, orient="row")
    return with_cymru_block(frame, cached_at)


def with_cymru_block(frame: pl.DataFrame, cached_at: datetime) -> pl.DataFrame:
    """Add the ``cymru`` JSON block built from the cymru columns."""
    block = pl.struct(
        pl.col("cymru_asn").alias("asn"),
        pl.col("cymru_asns").alias("asns"),
        pl.col("cymru_asn_org").alias("asn_org"),
        pl.col("cymru_country").alias("country"),
        pl.col("cymru_registry").alias("registry"),
        pl.col("cymru_prefix").alias("prefix"),
        pl.col("cymru_allocation_date").alias("allocation_date"),
        pl.col("cymru_error").alias("error"),
        pl.col("cymru_status").alias("status"),
        pl.lit(cached_at.isoformat()).alias("cached_at"),
    )
    return frame.with_columns(block.struct.json_encode().alias("cymru"))


def split_batch(batch: Batch) -> tuple[Batch, Batch]:
    """The IP queries and the ``AS<n>`` queries of a chunk, as two batches."""
    parts = []
    for is_as in (False, True):
        queries = [q for q in batch.queries if q.startswith("AS") == is_as]
        part = Batch(batch.number, batch.total, queries, sessions=batch.sessions)
        part.answers = {q: a for q, a in batch.answers.items() if q.startswith("AS") == is_as}
        part.failed = [q for q in batch.failed if q.startswith("AS") == is_as]
        part.reasons = {q: r for q, r in batch.reasons.items() if q.startswith("AS") == is_as}
        part.unasked = [q for q in batch.unasked if q.startswith("AS") == is_as]
        parts.append(part)
    return parts[0], parts[1]


def lookup_cymru(frame: pl.DataFrame, client: CymruClient, cached_at: datetime) -> pl.DataFrame:
    """Add the cymru columns and block to the rows that need Team Cymru (whole frame at once)."""
    parts = [cymru_results(batch, cached_at) for batch in client.lookup(cymru_targets(frame))]
    results = (
        pl.concat(parts)
        if parts
        else with_cymru_block(pl.DataFrame(schema=CYMRU_COLUMNS), cached_at)
    )
    return frame.join(results, on="ip", how="left", maintain_order="left")


def asn_details(batch: Batch) -> pl.DataFrame:
    """asn_inventory organization rows from one chunk of ``AS<n>`` answers (Tier 1)."""
    rows = []
    for query in batch.sent:
        answer = batch.answers.get(query)
        number = int(query[2:])
        if isinstance(answer, AsAnswer) and answer.found:
            rows.append(
                (number, answer.name, answer.country, answer.registry, answer.allocation_date, "ok")
            )
        elif isinstance(answer, AsAnswer):
            rows.append((number, None, None, None, None, "not_found"))
        else:
            rows.append((number, None, None, None, None, "error"))
    return pl.DataFrame(rows, schema=ASN_DETAIL_COLUMNS, orient="row")


def as_queries(asns: list[int]) -> list[str]:
    """``AS<n>`` query lines for the given AS numbers."""
    return [f"AS{n}" for n in sorted(set(asns))]
