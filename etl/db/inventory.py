"""The inventory as the operator's notebook reads it (read-only): one row per IP with what each
source said about it (`ip_details`), and the AS registration data (`asn_names`).

Each row's enrichment JSON is parsed once: DuckDB extracts every field in one call, as the
stale selection does (`etl.db.select`).
"""

from __future__ import annotations

import polars as pl

from etl.core.vocabulary import SOURCES, block_of
from etl.db.database import Database
from etl.db.select import USABLE_ENRICHMENT

# Output column -> JSON path in the enrichment, in the order DuckDB extracts them.
_FIELDS = {
    **{f"{source}_status": f"$.{block_of(source)}.status" for source in SOURCES},
    **{f"{source}_error": f"$.{block_of(source)}.error" for source in SOURCES},
    "maxmind_country": "$.maxmind.country",
    "country_name": "$.maxmind.country_name",
    "cymru_country": "$.cymru.country",
    "maxmind_asn": "$.maxmind.asn",
    "maxmind_asn_org": "$.maxmind.asn_org",
    "cymru_asn_org": "$.cymru.asn_org",
    "classification": "$.greynoise.classification",
    "greynoise_name": "$.greynoise.name",
    "is_bogon": "$.validation.is_bogon",
    "ip_type": "$.ip_classification.ip_type",
    "provider": "$.ip_classification.provider",
}
_F = {column: f"f[{i + 1}]" for i, column in enumerate(_FIELDS)}
# Fields that are combined or cast into other columns (the others are passed as they are).
_COMBINED = ("maxmind_country", "cymru_country", "maxmind_asn", "maxmind_asn_org", "cymru_asn_org")

IP_DETAILS_SCHEMA: dict[str, pl.DataType] = {
    "ip": pl.String(),
    "asn": pl.Int64(),
    "sessions": pl.Int64(),
    **{f"{source}_status": pl.String() for source in SOURCES},
    **{f"{source}_error": pl.String() for source in SOURCES},
    "country": pl.String(),
    "country_name": pl.String(),
    "asn_org": pl.String(),
    "classification": pl.String(),
    "greynoise_name": pl.String(),
    "is_bogon": pl.Boolean(),
    "ip_type": pl.String(),  # the labels' (SPEC 3.4): tor, cloud, datacenter, residential, ...
    "provider": pl.String(),
    "maxmind_asn": pl.Int64(),  # MaxMind's ASN: an IP without one is the IPs Cymru is asked
    "usable": pl.Boolean(),  # enrichment NULL or a JSON object (else the refresh leaves the row)
}
ASN_NAMES_SCHEMA: dict[str, pl.DataType] = {
    "asn": pl.Int64(),
    "organization": pl.String(),
    "country": pl.String(),
    "registry": pl.String(),
}


def ip_details(db: Database) -> pl.DataFrame:
    """One row per ip_inventory row (columns of `IP_DETAILS_SCHEMA`): its ASN and sessions,
    each source's ``status`` and ``error`` reason (null where the block has none), the country
    (MaxMind's, else Cymru's allocation country) and MaxMind's country name, the AS name its
    blocks give, GreyNoise's classification and name, whether it is a bogon, the labels' type
    and provider, MaxMind's ASN, and
    whether its enrichment is usable (a row whose enrichment is not a JSON object has only its
    ip, ASN and sessions: the refresh leaves it alone)."""
    if not db.columns("ip_inventory"):
        return pl.DataFrame(schema=IP_DETAILS_SCHEMA)
    paths = ", ".join(f"'{path}'" for path in _FIELDS.values())
    passed = ", ".join(f"{_F[column]} AS {column}" for column in _FIELDS if column not in _COMBINED)
    sql = f"""
        WITH rows AS (
            SELECT CAST(ip_address AS VARCHAR) AS ip, TRY_CAST(current_asn AS BIGINT) AS asn,
                   coalesce(TRY_CAST(session_count AS BIGINT), 0) AS sessions,
                   TRY(json_extract_string(CAST(enrichment AS VARCHAR), [{paths}])) AS f,
                   {USABLE_ENRICHMENT} AS usable
            FROM {db.table("ip_inventory")}
        )
        SELECT ip, asn, sessions, usable, TRY_CAST({_F["maxmind_asn"]} AS BIGINT) AS maxmind_asn,
               {passed},
               coalesce({_F["maxmind_country"]}, {_F["cymru_country"]}) AS country,
               coalesce({_F["maxmind_asn_org"]}, {_F["cymru_asn_org"]}) AS asn_org
        FROM rows
    """
    with db.duck_errors("reading ip_inventory"):
        frame = db.query_frame(sql)
    bogon = pl.col("is_bogon").str.to_lowercase().is_in(["true", "1"]).fill_null(False)
    return frame.with_columns(bogon).select(*IP_DETAILS_SCHEMA).cast(IP_DETAILS_SCHEMA)  # type: ignore[arg-type]


def asn_names(db: Database) -> pl.DataFrame:
    """asn_inventory's registration data (columns of `ASN_NAMES_SCHEMA`), one row per AS."""
    if not db.columns("asn_inventory"):
        return pl.DataFrame(schema=ASN_NAMES_SCHEMA)
    sql = f"""
        SELECT TRY_CAST(asn_number AS BIGINT) AS asn,
               CAST(organization_name AS VARCHAR) AS organization,
               CAST(organization_country AS VARCHAR) AS country,
               CAST(rir_registry AS VARCHAR) AS registry
        FROM {db.table("asn_inventory")}
    """
    with db.duck_errors("reading asn_inventory"):
        frame = db.query_frame(sql)
    return frame.cast(ASN_NAMES_SCHEMA).filter(pl.col("asn").is_not_null())  # type: ignore[arg-type]
