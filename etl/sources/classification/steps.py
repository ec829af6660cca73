"""Classification step: every address of the frame labelled against every list at once.

One equality join per (family, prefix length) present in the lists finds every range that
covers each address (an address shares its top ``prefix`` bits with its network: `keys`),
so ``labels`` holds every covering entry of every list, not only the most specific one (a
GitHub Actions range inside Azure is both). The type is then chosen by cowrieprocessor's
priority, vocabulary and confidences (`cowrieprocessor/enrichment/ip_classification/`):

    tor          the address is a Tor exit                   provider tor, 0.95
    cloud        a cloud range covers it; the provider is     provider, 0.99
                 the first of the providers' order (aws, azure, gcp, cloudflare, ...) that
                 covers it, as cowrieprocessor tries them; region and service each from the
                 most specific range of that provider that gives one (AWS, Google Cloud JSON)
    datacenter   the most specific datacenter range (the     vendor, lowercased, 0.75
                 last of equal ones)
    residential  the AS organization matches the heuristic   the organization, 0.8/0.7/0.5
    unknown      none of these                               null, 0.0

IPv4 and IPv6 alike (cowrieprocessor reads IPv4 lists only). The AS organization is
MaxMind's, else Team Cymru's (SPEC 3.4; cowrieprocessor reads Team Cymru's only).
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from typing import Final

import polars as pl

from etl.sources.classification.lists import ClassificationLists

# The residential heuristic, as cowrieprocessor's (case-insensitive, \b word boundaries): an
# exclusion wins; else 2+ strong groups matched 0.8, one 0.7; else a weak one 0.5.
EXCLUSIONS: Final = (
    r"\b(hosting|host|datacenter|data center|cloud|server|vps|dedicated)\b",
    r"\b(colo|colocation|facility)\b",
    r"\b(cdn|content delivery|edge|akamai|cloudflare|fastly)\b",
    r"\b(corporate|enterprise|business network)\b",
)
STRONG: Final = (
    r"\b(verizon|at&t|att|comcast|xfinity|cox|charter|spectrum)\b",
    r"\b(telecom|telecommunications?|telco)\b",
    r"\b(broadband|cable|dsl|fiber)\b",
    r"\b(mobile|wireless|cellular|gsm|lte|5g)\b",
)
WEAK: Final = (
    r"\b(isp|internet service|network provider)\b",
    r"\b(residential|consumer|subscriber)\b",
)

CONFIDENCE: Final = {"tor": 0.95, "cloud": 0.99, "datacenter": 0.75, "unknown": 0.0}
SOURCE: Final = {
    "tor": "tor_bulk_list",
    "datacenter": "datacenter_community_lists",
    "residential": "asn_name_heuristic",
    "unknown": "none",
}
LABEL_FIELDS: Final = ("list", "type", "provider", "network", "region", "service")
CLASSIFIED: Final = {
    "ip_type": pl.String,
    "provider": pl.String,
    "confidence": pl.Float64,
    "source": pl.String,
    "region": pl.String,
    "service": pl.String,
}


def residential_confidence(org: pl.Expr) -> pl.Expr:
    """The heuristic's confidence that an AS organization is a residential ISP (null: not)."""

    def hit(pattern: str) -> pl.Expr:
        return org.str.contains(f"(?i){pattern}").fill_null(False)

    excluded = pl.any_horizontal(hit(p) for p in EXCLUSIONS)
    strong = pl.sum_horizontal(hit(p).cast(pl.Int8) for p in STRONG)
    weak = pl.any_horizontal(hit(p) for p in WEAK)
    usable = org.is_not_null() & (org != "") & ~excluded
    return (
        pl.when(usable & (strong >= 2))
        .then(pl.lit(0.8))
        .when(usable & (strong == 1))
        .then(pl.lit(0.7))
        .when(usable & weak)
        .then(pl.lit(0.5))
    )


def _residential(orgs: pl.Series) -> pl.DataFrame:
    """The heuristic's confidence for each distinct AS organization (far fewer than rows)."""
    distinct = orgs.drop_nulls().unique().to_frame("_org")
    return distinct.with_columns(residential_confidence(pl.col("_org")).alias("_residential"))


def _ipv6_parts(frame: pl.DataFrame) -> pl.DataFrame:
    """Canonical text and the two 64-bit halves of each distinct IPv6 address (a small set)."""
    rows = []
    for packed in frame.filter(pl.col("family") == 6)["ipv6_packed"].unique().to_list():
        address = ipaddress.IPv6Address(packed)
        value = int(address)
        rows.append((packed, str(address), value >> 64, value & ((1 << 64) - 1)))
    schema = {"ipv6_packed": pl.Binary, "v6_text": pl.String, "hi": pl.UInt64, "lo": pl.UInt64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _addresses(frame: pl.DataFrame, as_org: pl.Expr | None = None) -> pl.DataFrame:
    """Per row of ``frame``: its index, family, canonical text and 64-bit halves (and its AS
    organization, ``_org``, when ``as_org`` is given)."""
    rows = frame.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"),
        "ip",
        pl.col("ip_version").alias("family"),
        "ipv4_int",
        "ipv6_packed",
        (pl.lit(None, pl.String) if as_org is None else as_org).alias("_org"),
    )
    v6 = _ipv6_parts(rows)
    rows = rows.join(v6, on="ipv6_packed", how="left", maintain_order="left")
    return rows.select(
        "_row",
        "family",
        pl.coalesce("v6_text", "ip").alias("canonical"),
        pl.when(pl.col("family") == 4)
        .then(pl.col("ipv4_int").cast(pl.UInt64))
        .otherwise(pl.col("hi"))
        .alias("hi"),
        "lo",
        "_org",
    )


def _keys(family: int, prefix: int) -> tuple[pl.Expr, pl.Expr]:
    """An address's keys for ranges of ``family`` and ``prefix`` (see `lists.network_keys`)."""
    hi, lo = pl.col("hi"), pl.col("lo")
    if family == 4:
        return (hi // (1 << (32 - prefix))).alias("key_hi"), pl.lit(0, pl.UInt64).alias("key_lo")
    if prefix == 0:
        return pl.lit(0, pl.UInt64).alias("key_hi"), pl.lit(0, pl.UInt64).alias("key_lo")
    if prefix <= 64:
        return (hi // (1 << (64 - prefix))).alias("key_hi"), pl.lit(0, pl.UInt64).alias("key_lo")
    return hi.alias("key_hi"), (lo // (1 << (128 - prefix))).alias("key_lo")


def covering_ranges(frame: pl.DataFrame, lists: ClassificationLists) -> pl.DataFrame:
    """Every (row of ``frame``, range of ``lists``) where the range covers the row's address,
    with the range's ``label`` (JSON): one equality join per family and prefix length the
    lists hold. A row's ranges come most specific first (then by list, then as listed)."""
    return _covering(_addresses(frame), lists)


def _covering(addresses: pl.DataFrame, lists: ClassificationLists) -> pl.DataFrame:
    every = (
        lists.ranges.sort(["prefix", "list", "order"], descending=[True, False, False])
        .with_row_index("_range")
        .with_columns(pl.struct(*LABEL_FIELDS).struct.json_encode().alias("label"))
    )
    by_family = {
        family: addresses.filter(pl.col("family") == family).select("_row", "hi", "lo")
        for family in (4, 6)
    }
    found = [pl.DataFrame(schema={"_row": pl.UInt32, **every.schema})]
    for (family, prefix), ranges in every.group_by(["family", "prefix"]):
        assert isinstance(family, int) and isinstance(prefix, int)
        keyed = by_family[family].select("_row", *_keys(family, prefix))
        found.append(keyed.join(ranges, on=["key_hi", "key_lo"]).select(found[0].columns))
    return pl.concat(found).sort("_range")


def classify(frame: pl.DataFrame, lists: ClassificationLists, as_org: pl.Expr) -> pl.DataFrame:
    """One row per row of ``frame`` (``ip``, ``ip_version``, ``ipv4_int``, ``ipv6_packed``, in
    its order): ``ip_type``, ``provider``, ``confidence``, ``source``, ``region``, ``service``
    and ``labels`` (every covering range, a JSON array of objects of `LABEL_FIELDS`, most
    specific first). ``as_org``: the AS organization."""
    addresses = _addresses(frame, as_org)
    matches = _covering(addresses, lists)
    rank = {provider: i for i, provider in enumerate(lists.providers)}
    labels = (  # a list, then joined: faster than joining the strings in the aggregation
        matches.group_by("_row")
        .agg(pl.col("label"))
        .select("_row", pl.col("label").list.join(",").alias("labels"))
    )
    cloud = (
        matches.filter(pl.col("type") == "cloud")
        .with_columns(
            pl.col("provider")
            .replace_strict(rank, default=len(rank), return_dtype=pl.Int32)
            .alias("_rank"),
            (pl.col("service") == "AMAZON").fill_null(False).alias("_broad"),
        )
        .sort(["_row", "_rank", "prefix", "_broad"], descending=[False, False, True, False])
        .filter(pl.col("_rank") == pl.col("_rank").min().over("_row"))
        .group_by("_row", maintain_order=True)
        .agg(
            pl.col("provider").first().alias("cloud_provider"),
            pl.col("region").drop_nulls().first().alias("cloud_region"),
            pl.col("service").drop_nulls().first().alias("cloud_service"),
        )
    )
    datacenter = (
        matches.filter(pl.col("type") == "datacenter")
        .sort(["_row", "prefix", "order"], descending=[False, True, True])
        .group_by("_row", maintain_order=True)
        .agg(pl.col("provider").first().alias("dc_provider"))
    )
    tor = lists.tor.select(pl.col("ip").alias("canonical"), pl.lit(True).alias("is_tor"))
    rows = (
        addresses.join(tor, on="canonical", how="left")
        .join(cloud, on="_row", how="left")
        .join(datacenter, on="_row", how="left")
        .join(labels, on="_row", how="left")
        .join(_residential(addresses["_org"]), on="_org", how="left")
        .sort("_row")
    )
    ip_type = (
        pl.when(pl.col("is_tor").fill_null(False))
        .then(pl.lit("tor"))
        .when(pl.col("cloud_provider").is_not_null())
        .then(pl.lit("cloud"))
        .when(pl.col("dc_provider").is_not_null())
        .then(pl.lit("datacenter"))
        .when(pl.col("_residential").is_not_null())
        .then(pl.lit("residential"))
        .otherwise(pl.lit("unknown"))
    )
    kind = pl.col("ip_type")
    return rows.with_columns(ip_type.alias("ip_type")).select(
        kind,
        pl.when(kind == "tor")
        .then(pl.lit("tor"))
        .when(kind == "cloud")
        .then(pl.col("cloud_provider"))
        .when(kind == "datacenter")
        .then(pl.col("dc_provider"))
        .when(kind == "residential")
        .then(pl.col("_org"))
        .alias("provider"),
        pl.when(kind == "residential")
        .then(pl.col("_residential"))
        .otherwise(kind.replace_strict(CONFIDENCE, default=0.0, return_dtype=pl.Float64))
        .alias("confidence"),
        pl.when(kind == "cloud")
        .then(pl.lit("cloud_ranges_") + pl.col("cloud_provider"))
        .otherwise(kind.replace_strict(SOURCE, default="none", return_dtype=pl.String))
        .alias("source"),
        pl.when(kind == "cloud").then(pl.col("cloud_region")).alias("region"),
        pl.when(kind == "cloud").then(pl.col("cloud_service")).alias("service"),
        (pl.lit("[") + _with_tor(pl.col("labels")) + pl.lit("]")).alias("labels"),
    )


def _with_tor(labels: pl.Expr) -> pl.Expr:
    """The ranges' labels, after a Tor exit's own (its address, from the Tor list)."""
    bits = pl.when(pl.col("family") == 6).then(pl.lit("128")).otherwise(pl.lit("32"))
    tor = pl.concat_str(
        pl.lit('{"list":"tor","type":"tor","provider":"tor","network":"'),
        pl.col("canonical"), pl.lit("/"), bits,
        pl.lit('","region":null,"service":null}'),
    )  # fmt: skip
    own = pl.when(pl.col("is_tor").fill_null(False)).then(tor)
    return pl.concat_str(own, labels, separator=",", ignore_nulls=True)


def classification_blocks(
    classified: pl.DataFrame, lists: ClassificationLists, as_org: pl.Series, now: datetime
) -> pl.Series:
    """The ``ip_classification`` block of each classified row (SPEC 3.4): cowrieprocessor's
    keys, plus region, service, every label, the version of each list used (`list_versions`),
    the AS organization the heuristic read, and the status. The flat keys are encoded as one
    struct; the labels (encoded once per range) and the versions (once per run) are spliced
    in as text."""
    keys = ("ip_type", "provider", "confidence", "source", "region", "service", "as_org")
    rows = classified.with_columns(pl.lit(as_org).alias("as_org"))
    # Far fewer kinds of block than rows: each one's flat keys are encoded once.
    kinds = (
        rows.select(keys)
        .unique()
        .with_columns(
            pl.struct(*keys[:4], pl.lit(now.isoformat()).alias("classified_at"), *keys[4:])
            .struct.json_encode()
            .str.head(-1)
            .alias("head")
        )
    )
    rows = rows.join(kinds, on=list(keys), how="left", nulls_equal=True, maintain_order="left")
    tail = f',"lists":{json.dumps(list_versions(lists), sort_keys=True)},"status":"ok"}}'
    block = pl.col("head") + pl.lit(',"labels":') + pl.col("labels") + pl.lit(tail)
    return rows.select(block.alias("ip_classification"))["ip_classification"]


def list_versions(lists: ClassificationLists) -> dict[str, str]:
    """The version of each list a block is made from: the first 16 hex digits of its sha256
    (a block records it for every list, so a list's change makes the block stale)."""
    return {name: version[:16] for name, version in lists.versions.items()}
