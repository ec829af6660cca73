"""SQL shared by both dialects' merges: the enrichment blocks, the stage columns, and the
asn_inventory upsert (the merge rules are described in `etl.db.write`)."""

from __future__ import annotations

from typing import Final

from etl.core.vocabulary import BLOCKS

IP_STAGE_COLUMNS: Final = {
    "ip_address": "VARCHAR",
    "current_asn": "BIGINT",
    "first_seen": "TIMESTAMPTZ",
    "last_seen": "TIMESTAMPTZ",
    "session_count": "BIGINT",
    "touched": "INTEGER",  # 0/1: SQLite stages read as text would turn 'true' into false
    **{block: "VARCHAR" for block in BLOCKS},  # JSON text, NULL when absent
    "blocks": "INTEGER",  # which blocks the row has: bit i for BLOCKS[i]
}
ASN_STAGE_COLUMNS: Final = {
    "asn_number": "BIGINT",
    "organization_name": "VARCHAR",
    "organization_country": "VARCHAR",
    "rir_registry": "VARCHAR",
}
# Tier 1 (AS registration from Cymru): the asn stage plus the asn_inventory `cymru` block.
ASN_DETAIL_STAGE_COLUMNS: Final = {**ASN_STAGE_COLUMNS, "details": "VARCHAR"}


def asn_upsert(table: str, stage: str, now: str, enrichment: str, merged: str | None = None) -> str:
    """Upsert asn_inventory rows from a stage table.

    Without ``merged`` (rows derived from IPs): insert new ASNs and, for known ones, only fill
    organization fields that are still NULL. With ``merged`` (Tier 1, Cymru's AS answers): known
    values replace old ones and ``enrichment`` becomes ``merged``.
    """
    first, second = ("excluded", "asn_inventory") if merged else ("asn_inventory", "excluded")
    fields = ("organization_name", "organization_country", "rir_registry")
    updates = [f"{f} = coalesce({first}.{f}, {second}.{f})" for f in fields]
    if merged:
        updates += [
            f"enrichment = {merged}",
            "enrichment_updated_at = excluded.enrichment_updated_at",
        ]
        condition = ""
    else:
        condition = "WHERE " + " OR ".join(
            f"(asn_inventory.{f} IS NULL AND excluded.{f} IS NOT NULL)" for f in fields
        )
    set_clause = ",\n            ".join([*updates, "updated_at = excluded.updated_at"])
    touched = now if merged else "NULL"  # enrichment_updated_at: only Tier 1 enriches an ASN
    return f"""INSERT INTO {table} AS asn_inventory (asn_number, organization_name,
            organization_country, rir_registry, first_seen, last_seen, enrichment,
            enrichment_updated_at, created_at, updated_at)
        SELECT asn_number, organization_name, organization_country, rir_registry,
               {now}, {now}, {enrichment}, {touched}, {now}, {now}
        FROM {stage} WHERE true
        ON CONFLICT (asn_number) DO UPDATE SET
            {set_clause}
        {condition}"""
