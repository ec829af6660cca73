"""Stale selection (SPEC 2.2): which IPs this run refreshes, as a Polars frame.

Inventory rows are read in DuckDB over the attached database; IPs that have no row yet come
from their sessions (`etl.db.sessions`: sessions whose source_ip has no row, and sessions the
loader left unlinked, found through their raw events) and join the stale rows in Polars.
Timestamps are compared as timestamps: SQLite text (cowrieprocessor's
``YYYY-MM-DD HH:MM:SS.ffffff``, ISO forms, epoch numbers) is parsed first, never compared as
text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from etl.core.freshness import DataVersion, Freshness
from etl.core.vocabulary import ENRICHING, SOURCES, Source, block_of
from etl.db.database import Database
from etl.db.sessions import FoundSessions, find_sessions
from etl.db.timestamps import TIMESTAMP_MACRO as _TIMESTAMP_MACRO
from etl.db.timestamps import parse_timestamps

# Fields read from each inventory row's enrichment JSON, parsed once per row.
_PATHS = (
    "$.validation.is_bogon",
    "$.maxmind.status",
    "$.maxmind.cached_at",
    "$.maxmind.db_build_epoch",
    "$.maxmind.error",
    "$.maxmind.asn",
    "$.cymru.status",
    "$.cymru.cached_at",
    "$.cymru.asn",
    "$.greynoise.status",
    "$.greynoise.cached_at",
    "$.maxmind.asn_org",
    "$.cymru.asn_org",
    "$.ip_classification.status",
    "$.ip_classification.classified_at",
    "$.ip_classification.as_org",
    "$.ip_classification.lists",
)
_F = {path: f"f[{i + 1}]" for i, path in enumerate(_PATHS)}

SELECTION_SCHEMA = {
    "ip": pl.String,
    "priority": pl.Int64,  # 0 first: the order the max_ips setting chooses in
    "is_new": pl.Boolean,
    "never_enriched": pl.Boolean,
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
    "session_count": pl.Int64,
    "current_asn": pl.Int64,
    "old_maxmind_asn": pl.Int64,
    # The AS organization the labels read (MaxMind's, else Team Cymru's), and Team Cymru's.
    "old_as_org": pl.String,
    "old_cymru_org": pl.String,
    **{f"stale_{source}": pl.Boolean for source in SOURCES},  # asked about in this run
    "via_raw_events": pl.Boolean,  # a new IP found through the raw events of unlinked sessions
}

# Rows whose enrichment is not a JSON object cannot be merged without losing what they hold:
# the refresh leaves them alone and counts them (NULL counts as an empty object). TRY turns the
# parse error of invalid JSON into NULL, so each document is parsed once.
USABLE_ENRICHMENT = (
    "(enrichment IS NULL"
    " OR coalesce(TRY(json_type(CAST(enrichment AS VARCHAR))) = 'OBJECT', false))"
)
# The same test inside the selection, from the fields it extracts anyway (``f``, NULL exactly
# when the text is not JSON): valid JSON is an object when it opens with a brace.
_OPENS_OBJECT = (
    "starts_with(ltrim(CAST(enrichment AS VARCHAR), ' ' || chr(9) || chr(10) || chr(13)), '{')"
)
_USABLE_FROM_FIELDS = "(no_enrichment OR (f IS NOT NULL AND coalesce(opens_object, false)))"

# The run's values in the selection SQL, bound by `Database.query_frame`.
_NOW = "getvariable('etl_now')"
_EPOCH = "getvariable('etl_epoch')"
_NEVER = f"({_NOW} + INTERVAL 36500 DAY)"  # not stale in this run


@dataclass(frozen=True)
class SelectionRules:
    """What makes an IP selectable in this run."""

    now: datetime
    freshness: Freshness
    asked: frozenset[str]  # the sources this run asks (`etl.core.vocabulary.Source`)
    # The version of each offline source's data this run uses (`etl.sources.offline`), by
    # source: MaxMind's build, and what its blocks lack ("no City database") when a file is
    # missing. A source absent here has version 0: no block of it is stale for its version.
    versions: Mapping[Source, DataVersion] = field(default_factory=dict, hash=False)
    max_ips: int | None = None
    only_ips: tuple[str, ...] = ()

    def version(self, source: Source) -> DataVersion:
        """The version of ``source``'s data this run uses."""
        return self.versions.get(source, DataVersion())


def _variables(rules: SelectionRules) -> dict[str, object]:
    """The values the selection's SQL reads by name: the run's time, MaxMind's build."""
    return {"etl_now": rules.now, "etl_epoch": rules.version(Source.MAXMIND).epoch}


def _interval(delta: timedelta) -> str:
    return f"INTERVAL {int(delta.total_seconds())} SECOND"


def _expiry_expressions(rules: SelectionRules) -> dict[str, tuple[str, str]]:
    """Per source, SQL over the parsed fields ``f`` (see `_PATHS`): when its block was cached,
    and when the block goes stale (SPEC 2.2: its TTL after ``cached_at``; NULL when it is
    stale whatever the time: no block, ``status: error``, an older MaxMind build)."""
    fresh = rules.freshness
    mm_cached = f"etl_ts({_F['$.maxmind.cached_at']})"
    cy_cached = f"etl_ts({_F['$.cymru.cached_at']})"
    gn_cached = f"etl_ts({_F['$.greynoise.cached_at']})"
    cy_status = (
        f"coalesce({_F['$.cymru.status']}, "
        f"CASE WHEN {_F['$.cymru.asn']} IS NULL THEN 'not_found' ELSE 'ok' END)"
    )
    older_build = f"coalesce(TRY_CAST({_F['$.maxmind.db_build_epoch']} AS BIGINT), 0) < {_EPOCH}"
    not_found_ttl = min(fresh.cymru_not_found, fresh.cymru_ok)
    mm_expiry = (
        f"CASE WHEN {_F['$.maxmind.status']} = 'error' OR {older_build} THEN NULL"
        f" ELSE {mm_cached} + {_interval(fresh.maxmind)} END"
    )
    lacking = rules.version(Source.MAXMIND).lacking
    if lacking is not None:
        # A file is missing: a complete block is kept as it is (this run could only make it
        # worse), a block that lacks the same is fresh for its TTL, any other one is stale.
        lacking = lacking.replace("'", "''")
        mm_expiry = (
            f"CASE WHEN {_F['$.maxmind.status']} IN ('ok', 'not_found') THEN {_NEVER}"
            f" WHEN {_F['$.maxmind.status']} = 'error' AND {_F['$.maxmind.error']} = '{lacking}'"
            f" THEN {mm_cached} + {_interval(fresh.maxmind)} ELSE NULL END"
        )
    return {
        "maxmind": (mm_cached, mm_expiry),
        "classification": _labels_expiry(rules),
        "cymru": (
            cy_cached,
            f"CASE WHEN {cy_status} = 'error' THEN NULL"
            f" WHEN {cy_status} = 'not_found' THEN {cy_cached} + {_interval(not_found_ttl)}"
            f" ELSE {cy_cached} + {_interval(fresh.cymru_ok)} END",
        ),
        "greynoise": (
            gn_cached,
            f"CASE WHEN {_F['$.greynoise.status']} = 'error' THEN NULL"
            f" ELSE {gn_cached} + {_interval(fresh.greynoise)} END",
        ),
    }


# A source whose staleness depends on another's (over the CTE ``flagged``'s columns; else a
# source is stale when its block is): Team Cymru is asked only where MaxMind has no ASN, known
# once MaxMind has looked the IP up again.
_STALE_WHEN = {
    "cymru": "cymru_block_stale AND (maxmind_block_stale OR old_maxmind_asn IS NULL)",
}
# A source's state in the status counts, when it is not its block's (over ``rows``).
_STATE_WHEN = {
    "cymru": "CASE WHEN old_maxmind_asn IS NULL THEN cymru_state ELSE 'not_needed' END",
}


def _labels_expiry(rules: SelectionRules) -> tuple[str, str]:
    """The labels' block (SPEC 3.4): stale when it is not ``ok``, when it was made from other
    versions of the lists than this run's (one more, one less, one changed), or when the AS
    organization it read is no longer the row's; else never by age."""
    lists = _F["$.ip_classification.lists"]
    parts = rules.version(Source.CLASSIFICATION).parts
    same = " AND ".join(
        [
            *(
                f"json_extract_string({lists}, '$.\"{name}\"') = '{version}'"
                for name, version in parts
            ),
            f"len(json_keys({lists})) = {len(parts)}",
        ]
    )
    # A ``lists`` that is no JSON object (written by hand): stale, never an error.
    same_lists = f"coalesce(TRY(json_type({lists}) = 'OBJECT' AND {same}), false)"
    org = f"coalesce({_F['$.maxmind.asn_org']}, {_F['$.cymru.asn_org']})"
    same_org = f"{_F['$.ip_classification.as_org']} IS NOT DISTINCT FROM {org}"
    cached = f"etl_ts({_F['$.ip_classification.classified_at']})"
    ok = f"{_F['$.ip_classification.status']} = 'ok'"
    expiry = f"CASE WHEN {ok} AND {same_lists} AND {same_org} THEN {_NEVER} ELSE NULL END"
    return cached, expiry


def _stale(expires: str) -> str:
    """SQL: whether a block that goes stale at ``expires`` is stale now."""
    return f"({expires} IS NULL OR {expires} < {_NOW})"


def _stale_expressions(rules: SelectionRules) -> dict[str, str]:
    """SQL booleans over the parsed fields ``f``, one per source: stale for this run (every
    source asked about an IP named by the only_ips setting; none not asked)."""
    expiry = _expiry_expressions(rules)
    forced = bool(rules.only_ips)
    return {
        f"stale_{source}": ("true" if forced else _stale(expiry[source][1])) if enabled else "false"
        for source, enabled in _enabled(rules).items()
    }


def _state_columns(rules: SelectionRules) -> str:
    """SQL columns ``<source>_state`` (never, error, stale or fresh, by the TTLs whatever the
    run asks) and ``<source>_expires`` (when a fresh block goes stale)."""
    columns = []
    for source, (cached, expires) in _expiry_expressions(rules).items():
        status = _F[f"$.{block_of(source)}.status"]
        state = (
            f"CASE WHEN {cached} IS NULL THEN 'never' WHEN {status} = 'error' THEN 'error'"
            f" WHEN {_stale(expires)} THEN 'stale' ELSE 'fresh' END"
        )
        columns += [f"{state} AS {source}_state", f"{expires} AS {source}_expires"]
    return ",\n           ".join(columns)


def _inventory_ctes(db: Database, rules: SelectionRules) -> str:
    """The CTEs ``inventory``, ``flagged`` and ``stale``: each inventory row's parsed fields,
    which sources are stale for it in this run, and each source's state (`_state_columns`)."""
    stale = _stale_expressions(rules)
    paths = ", ".join(f"'{p}'" for p in _PATHS)
    blocks = ",\n           ".join(f"{stale[f'stale_{s}']} AS {s}_block_stale" for s in SOURCES)
    sources = ", ".join(f"{_STALE_WHEN.get(s, f'{s}_block_stale')} AS stale_{s}" for s in SOURCES)
    # Where each row is stored (SQLite's rowid); PostgreSQL's scan does not expose one.
    position = db.backend.row_position
    return f"""
WITH inventory AS (
    SELECT CAST(ip_address AS VARCHAR) AS ip, {position} AS position,
           etl_ts(CAST(last_seen AS VARCHAR)) AS last_seen,
           etl_ts(CAST(enrichment_updated_at AS VARCHAR)) IS NULL AS never_enriched,
           TRY_CAST(current_asn AS BIGINT) AS current_asn,
           TRY(json_extract_string(CAST(enrichment AS VARCHAR), [{paths}])) AS f,
           enrichment IS NULL AS no_enrichment,
           {_OPENS_OBJECT} AS opens_object
    FROM {db.table("ip_inventory")}
), flagged AS (
    SELECT ip, position, last_seen, never_enriched, current_asn,
           coalesce({_F["$.validation.is_bogon"]} IN ('true', '1'), false) AS known_bogon,
           TRY_CAST({_F["$.maxmind.asn"]} AS BIGINT) AS old_maxmind_asn,
           coalesce({_F["$.maxmind.asn_org"]}, {_F["$.cymru.asn_org"]}) AS old_as_org,
           {_F["$.cymru.asn_org"]} AS old_cymru_org,
           {blocks},
           {_USABLE_FROM_FIELDS} AS usable,
           {_state_columns(rules)}
    FROM inventory
), stale AS (
    SELECT *, {sources}
    FROM flagged
)"""


def selection_sql(db: Database, rules: SelectionRules) -> str:
    """The DuckDB query that returns the stale inventory rows (the selection's columns, plus
    ``position``, ``usable`` and ``known_bogon``)."""
    stale = [f"stale_{source}" for source in SOURCES]
    return f"""{_inventory_ctes(db, rules)}
SELECT ip, position, false AS is_new, never_enriched, CAST(NULL AS TIMESTAMPTZ) AS first_seen,
       last_seen, CAST(NULL AS BIGINT) AS session_count, current_asn, old_maxmind_asn,
       old_as_org, old_cymru_org, {", ".join(stale)}, usable, known_bogon
FROM stale
WHERE {" OR ".join(stale)}
"""


def new_ip_candidates(db: Database, found: FoundSessions, rules: SelectionRules) -> pl.DataFrame:
    """IPs without an inventory row, from their sessions, as selection rows (every enabled
    source stale; first_seen, last_seen and session_count from all their sessions)."""
    enabled = _enabled(rules)
    sessions = parse_timestamps(db.duck, found.of_new_ips(), ["first_event_at", "last_event_at"])
    return (
        sessions.group_by("ip")
        .agg(
            pl.col("first_event_at").min().alias("first_seen"),
            pl.col("last_event_at").max().alias("last_seen"),
            pl.len().cast(pl.Int64).alias("session_count"),
            pl.col("unlinked").any().alias("via_raw_events"),
        )
        .select(
            "ip",
            pl.lit(None, pl.Int64).alias("position"),
            pl.lit(True).alias("is_new"),
            pl.lit(True).alias("never_enriched"),
            "first_seen",
            "last_seen",
            "session_count",
            pl.lit(None, pl.Int64).alias("current_asn"),
            pl.lit(None, pl.Int64).alias("old_maxmind_asn"),
            pl.lit(None, pl.String).alias("old_as_org"),
            pl.lit(None, pl.String).alias("old_cymru_org"),
            *(pl.lit(on).alias(f"stale_{source}") for source, on in enabled.items()),
            pl.lit(True).alias("usable"),
            pl.lit(False).alias("known_bogon"),
            "via_raw_events",
        )
    )


def _enabled(rules: SelectionRules) -> dict[str, bool]:
    return {source: source in rules.asked for source in SOURCES}


def select_stale(
    db: Database, rules: SelectionRules, found: FoundSessions | None = None
) -> pl.DataFrame:
    """IPs to refresh: chosen never-enriched first, then by last_seen descending (what
    the max_ips setting keeps; the ``priority`` column keeps that order), and returned new IPs
    first, then in the order the table stores them. ``found``: the sessions of IPs without a
    row (`find_sessions`, read here when not given). The column ``via_raw_events`` tells the
    new IPs found through the raw events of unlinked sessions.

    The run asks the services and commits in this order, so each chunk's rows share pages:
    5,000 rows from all over a large SQLite table dirty (and journal) about one page each.
    """
    found = (find_sessions(db) if found is None else found).only(rules.only_ips)
    with db.duck_errors("selecting stale IPs"):
        stale = db.query_frame(selection_sql(db, rules), _variables(rules), [_TIMESTAMP_MACRO])
    new = new_ip_candidates(db, found, rules)
    stale = stale.with_columns(via_raw_events=pl.lit(False)).cast(new.schema)
    stale = stale.select(new.columns)
    frame = pl.concat([new, stale], how="vertical")
    if rules.only_ips:
        frame = frame.filter(pl.col("ip").is_in(list(rules.only_ips)))
    # These two filters run here, not in SQL: DuckDB would push them under the inventory CTE,
    # where they would parse every row's JSON a second time.
    keep = pl.col("usable") if rules.only_ips else pl.col("usable") & ~pl.col("known_bogon")
    frame = frame.filter(keep).drop("usable", "known_bogon")
    frame = frame.sort(
        ["never_enriched", "last_seen", "ip"], descending=[True, True, False], nulls_last=True
    )
    if rules.max_ips is not None:
        # The cap counts the IPs an enriching source needs; the rows stale only for their
        # labels (after a list changed: every row) ask no service and are all relabelled.
        enriching = pl.any_horizontal(pl.col(f"stale_{source}") for source in ENRICHING)
        frame = pl.concat([frame.filter(enriching).head(rules.max_ips), frame.filter(~enriching)])
    frame = frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("priority"))
    frame = frame.sort("position", nulls_last=False, maintain_order=True).drop("position")
    return frame.cast(SELECTION_SCHEMA)  # type: ignore[arg-type]


def freshness_sql(db: Database, rules: SelectionRules) -> str:
    """The DuckDB query behind `freshness_counts`: the selection's own CTEs, counted."""
    states = ", ".join(f"{source}_state, {source}_expires" for source in SOURCES)
    # Materialized: each row's JSON is parsed once, not once per source.
    per_source = "\n    UNION ALL\n    ".join(
        f"SELECT '{source}' AS source, {_STATE_WHEN.get(source, f'{source}_state')} AS state, "
        f"{source}_expires AS expires FROM rows WHERE counted"
        for source in SOURCES
    )
    return f"""{_inventory_ctes(db, rules)}, rows AS MATERIALIZED (
    SELECT usable AND NOT known_bogon AS counted, usable, old_maxmind_asn, {states} FROM stale
), per_source AS (
    {per_source}
    UNION ALL
    SELECT 'inventory', CASE WHEN usable THEN 'bogon' ELSE 'unusable' END, NULL
    FROM rows WHERE NOT counted
)
SELECT source, state,
       CASE WHEN state = 'fresh' THEN CAST(floor(epoch(expires) / 86400) AS INTEGER) END
           AS stale_day,
       count(*) AS ips
FROM per_source GROUP BY ALL
"""


def freshness_counts(
    db: Database, rules: SelectionRules, found: FoundSessions | None = None
) -> pl.DataFrame:
    """How many IPs each source has in each state at ``rules.now``, by the same rules as the
    selection: ``never`` (no block: never asked), ``error``, ``stale``, ``fresh``, and for
    Cymru ``not_needed`` (MaxMind has an ASN for the IP). Fresh blocks come with the UTC day
    they go stale on (``stale_on``). Rows of source ``inventory`` count the rows no source is
    asked about: ``bogon`` (bogons and strings that are not IPs), ``unusable`` (enrichment
    that is not a JSON object). IPs seen only in sessions are ``never`` for MaxMind and
    GreyNoise, and ``not_known`` for Cymru: it is needed only if MaxMind has no ASN for them,
    which is known once MaxMind has looked them up. ``found``: as for `select_stale`."""
    with db.duck_errors("counting stale IPs"):
        frame = db.query_frame(freshness_sql(db, rules), _variables(rules), [_TIMESTAMP_MACRO])
    found = find_sessions(db) if found is None else found
    new_ips = found.of_new_ips()["ip"].n_unique()
    new = pl.DataFrame(
        {
            "source": list(SOURCES),
            "state": ["not_known" if source == "cymru" else "never" for source in SOURCES],
            "stale_day": [None] * len(SOURCES),
            "ips": [new_ips] * len(SOURCES),
        }
    ).filter(pl.col("ips") > 0)
    columns = (
        pl.col("source").cast(pl.String),
        pl.col("state").cast(pl.String),
        pl.col("stale_day").cast(pl.Int32).cast(pl.Date).alias("stale_on"),
        pl.col("ips").cast(pl.Int64),
    )
    counted = pl.concat([frame.select(columns), new.select(columns)])
    return counted.group_by("source", "state", "stale_on", maintain_order=True).agg(
        pl.col("ips").sum()
    )


DUE_STATES = ("stale", "error", "never")


def due_counts(
    db: Database, rules: SelectionRules, found: FoundSessions | None = None
) -> dict[str, int]:
    """Per source, the IPs due now, whatever the run asks: stale, in error or never asked
    (``due now`` in `honeypot-etl status`), by `freshness_counts` (one more pass over the
    inventory). ``rules``: only the time, the TTLs and MaxMind's build count."""
    counts = freshness_counts(db, rules, found).filter(pl.col("state").is_in(DUE_STATES))
    return {
        source: int(counts.filter(pl.col("source") == source)["ips"].sum()) for source in SOURCES
    }


def unknown_ips(frame: pl.DataFrame, requested: tuple[str, ...]) -> list[str]:
    """Addresses asked for by name (the only_ips setting) that are neither in the inventory nor
    in sessions."""
    found = set(frame["ip"].to_list())
    return [ip for ip in requested if ip not in found]


def asn_details_state(
    db: Database, now: datetime, freshness: Freshness
) -> tuple[set[int], set[int]]:
    """asn_inventory's ASNs split in two: registration data fresh, or to look up again.

    Fresh: Cymru's AS answer (the row's ``cymru`` block) is younger than 90 days, or 7 days
    when it was not found; or, never looked up by us, the row is complete and recent.
    """
    sql = f"""
        WITH rows AS (
            SELECT TRY_CAST(asn_number AS BIGINT) AS asn_number,
                   organization_name IS NOT NULL AND organization_country IS NOT NULL
                       AND rir_registry IS NOT NULL AS complete,
                   etl_ts(CAST(enrichment_updated_at AS VARCHAR)) AS looked_up,
                   etl_ts(CAST(updated_at AS VARCHAR)) AS updated,
                   CASE WHEN json_valid(CAST(enrichment AS VARCHAR))
                        THEN json_extract_string(CAST(enrichment AS VARCHAR), '$.cymru.status')
                   END AS status
            FROM {db.table("asn_inventory")}
        )
        SELECT asn_number,
               coalesce((status = 'ok' AND looked_up >= getvariable('etl_ok_cutoff'))
                        OR (status = 'not_found'
                            AND looked_up >= getvariable('etl_not_found_cutoff'))
                        OR (complete
                            AND coalesce(looked_up, updated) >= getvariable('etl_ok_cutoff')),
                        false) AS fresh
        FROM rows
    """
    variables: dict[str, object] = {
        "etl_ok_cutoff": now - freshness.asn_details,
        "etl_not_found_cutoff": now - freshness.cymru_not_found,
    }
    with db.duck_errors("reading asn_inventory"):
        rows = db.query_frame(sql, variables, [_TIMESTAMP_MACRO]).rows()
    fresh = {int(number) for number, ok in rows if number is not None and ok}
    stale = {int(number) for number, ok in rows if number is not None and not ok}
    return fresh, stale


def unusable_rows(db: Database) -> int:
    """Inventory rows left alone because their enrichment is not a JSON object."""
    with db.duck_errors("checking enrichment JSON"):
        frame = db.query_frame(
            f"SELECT count(*) FROM {db.table('ip_inventory')} WHERE NOT {USABLE_ENRICHMENT}"
        )
    return int(frame.item())
