"""The numbers behind notebooks/explore.ipynb, one function per question (read-only).

`load_snapshot` reads a database once (the status report, one row per IP, the IPs seen only in
sessions, the AS names, the run log); every other function turns what it read into the small
frame one plot draws. No function here asks a service or writes anything. The per-IP questions
count the IPs the refresh counts: not bogons, and with usable enrichment (JSON the refresh can
merge into). When the database cannot be read, `cannot_load` is the one line to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from etl.core.errors import EtlError
from etl.core.freshness import Freshness
from etl.core.vocabulary import SOURCES
from etl.db import runlog
from etl.db.inventory import asn_names, ip_details
from etl.refresh.config import RefreshConfig
from etl.status.collect import (
    RUN_ERRORS,
    StatusReport,
    gather,
    reading,
    runs_as_found,
    sessions_found,
)

# The states of a source among the IPs that need it, in the order they are drawn.
NEEDED_STATES = ("fresh", "stale", "error", "never")
# Cymru, for IPs seen only in sessions: whether they need it is known once MaxMind looked.
NOT_KNOWN_YET = "not_known"
# GreyNoise answers, by group: what it said of the IPs it has seen, and the IPs it has not.
OBSERVED = "observed"
NOT_OBSERVED = "not observed"
NOT_ANSWERED = "not answered"
NO_REASON = "no reason recorded"
NEVER_ASKED = "never asked"
# The run plot's tick labels: the UTC day (month and day) and time a run started.
RUN_LABEL = "%m-%d %H:%M"
NEW_IPS_SCHEMA = {"ip": pl.String, "sessions": pl.Int64}
# The labels' network types in their priority order (SPEC 3.4), then the IPs not labelled yet.
NOT_LABELLED = "not labelled"
NETWORK_TYPES = ("tor", "cloud", "datacenter", "residential", "unknown", NOT_LABELLED)
OTHER_PROVIDERS = "other providers"
HOSTED_TYPES = ("cloud", "datacenter")  # the types whose provider is a hosting company


@dataclass(frozen=True)
class Snapshot:
    """What `load_snapshot` read: the status report, one row per IP (`ip_details`), the AS
    names (`asn_names`), the run log (oldest run first), the TTLs the report applied, and the
    IPs seen only in sessions with their sessions (`NEW_IPS_SCHEMA`: no inventory row yet;
    the report counts them, "never asked" by MaxMind and GreyNoise)."""

    report: StatusReport
    ips: pl.DataFrame
    asns: pl.DataFrame
    runs: pl.DataFrame
    freshness: Freshness
    new_ips: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=NEW_IPS_SCHEMA))


def ttl_days(freshness: Freshness) -> dict[str, int]:
    """Each source's longest TTL in whole days: how far ahead its forecast must look for
    every fresh block to go stale on it."""
    longest = {
        "maxmind": freshness.maxmind,
        "cymru": max(freshness.cymru_ok, freshness.cymru_not_found),
        "greynoise": freshness.greynoise,
    }
    return {source: -(-ttl // timedelta(days=1)) for source, ttl in longest.items()}


def load_snapshot(config: RefreshConfig, runs: int = 500) -> Snapshot:
    """Read the database ``config`` names, read-only, at ``config.clock()``: the status report
    with a forecast as long as the longest TTL, every IP, the AS names and the last ``runs``
    runs (500: three weeks of hourly runs). Raises what `etl.status.collect.status_report`
    raises."""
    horizon = max(ttl_days(config.freshness).values()) + 1
    with reading(config) as (db, maxmind, now):
        found = sessions_found(db)
        report = gather(db, config, maxmind, now, runs=0, forecast_days=horizon, found=found)
        log = runs_as_found(db, lambda: runlog.recent_runs(db, runs)).reverse()
        new = found.of_new_ips().group_by("ip").agg(pl.len().alias("sessions"))
        new_ips = new.cast(NEW_IPS_SCHEMA)  # type: ignore[arg-type]
        return Snapshot(report, ip_details(db), asn_names(db), log, config.freshness, new_ips)


def cannot_load(error: EtlError) -> str:
    """The one line the notebook shows when `load_snapshot` raised ``error``: what failed, and
    how to name a database."""
    return (
        f"nothing to show: {' '.join(str(error).split())}. Set ETL_DB_URL (or db in etl.toml) "
        "to your honeypot database (MAXMIND_DIR to its MaxMind folder), or run `make demo` to "
        "build the sample one."
    )


def coverage(report: StatusReport) -> pl.DataFrame:
    """Per source, its IPs by state (fresh, stale, error, never asked) among the IPs that need
    it (Cymru: only those MaxMind has no ASN for), with their share of them. For Cymru the IPs
    seen only in sessions are apart, `NOT_KNOWN_YET` (no share): MaxMind has not looked them
    up, so whether they need Cymru is not known."""
    rows = [
        (source, state, count)
        for source, status in report.sources.items()
        for state, count in status.states.items()
        if state in NEEDED_STATES or (state == NOT_KNOWN_YET and source == "cymru")
    ]
    frame = pl.DataFrame(rows, schema={"source": pl.String, "state": pl.String, "ips": pl.Int64},
                         orient="row")  # fmt: skip
    counted = pl.col("state").is_in(NEEDED_STATES)
    needed = pl.col("ips").filter(counted).sum().over("source")
    share = pl.when(~counted).then(None).when(needed > 0).then(pl.col("ips") / needed)
    return frame.with_columns(needed.alias("needed"), share.otherwise(0.0).alias("share"))


def forecast(report: StatusReport, freshness: Freshness) -> pl.DataFrame:
    """Per source, for each day from today to the end of its own TTL: how many of its fresh
    blocks go stale that day, and how many IPs are due by then if no refresh runs (``due``:
    those due today, stale, in error or never asked, plus every block gone stale since)."""
    frames = []
    for source, days in ttl_days(freshness).items():
        status = report.sources[source]
        going = list(status.going_stale.items())[: days + 1]
        frames.append(
            pl.DataFrame(
                {
                    "source": source,
                    "ttl_days": days,
                    "days_ahead": range(len(going)),
                    "day": [date.fromisoformat(day) for day, _ in going],
                    "going_stale": [count for _, count in going],
                },
                schema_overrides={"days_ahead": pl.Int64, "going_stale": pl.Int64},
            ).with_columns((pl.col("going_stale").cum_sum() + status.due).alias("due"))
        )
    return pl.concat(frames)


def errors_by_reason(ips: pl.DataFrame) -> pl.DataFrame:
    """The IPs whose last answer from a source was an error, among the IPs that need the source
    (the next run asks them again), by source and the reason the block records (`NO_REASON`
    for blocks written before reasons were kept), most first."""
    frames = [
        _counted(ips)
        .filter(pl.col(f"{source}_status") == "error", _needs(source))
        .select(
            pl.lit(source).alias("source"),
            pl.col(f"{source}_error").fill_null(NO_REASON).alias("reason"),
        )
        for source in SOURCES
    ]
    return (
        pl.concat(frames)
        .group_by("source", "reason")
        .agg(pl.len().cast(pl.Int64).alias("ips"))
        .sort(["ips", "source", "reason"], descending=[True, False, False])
    )


def runs_over_time(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run of the run log, oldest first: its place on the plot (``position``: one
    slot per run, so runs minutes apart stay apart however long the log), when it started and
    its tick label (`RUN_LABEL`, UTC: the month and day, then the time), its outcome
    (``killed`` for a dead run, see `runs_as_found`: like ``failed`` and ``interrupted``, no
    clean end) and exit code (none for a killed or running run), the ip_inventory rows it
    wrote, the GreyNoise Searches it spent and its per-IP errors (all sources)."""
    started = pl.col("started_at").dt.convert_time_zone("UTC")
    return runs.sort("run_id").select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("position"),
        "run_id",
        "started_at",
        started.dt.strftime(RUN_LABEL).fill_null("?").alias("label"),
        "outcome",
        "exit_code",
        pl.col("ip_rows_written").fill_null(0).alias("rows"),
        pl.col("greynoise_searches").fill_null(0).alias("searches"),
        RUN_ERRORS.fill_null(0),
    )


def run_ticks(runs: pl.DataFrame, most: int = 8) -> pl.DataFrame:
    """The runs of `runs_over_time` that get a tick on the plot (``position``, ``label``):
    every run when there are at most ``most``, else ``most`` evenly spread from the first run
    to the last."""
    count = runs.height
    if count <= most:
        chosen = list(range(count))
    else:
        chosen = sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
    return runs.select("position", "label").filter(pl.col("position").is_in(chosen))


def _counted(ips: pl.DataFrame) -> pl.DataFrame:
    """The IPs a source is asked about: not bogons, usable enrichment."""
    return ips.filter(pl.col("usable") & ~pl.col("is_bogon"))


def _needs(source: str) -> pl.Expr:
    """Whether an IP needs ``source``: Cymru only without a MaxMind ASN, the others always."""
    return pl.col("maxmind_asn").is_null() if source == "cymru" else pl.lit(True)


def top_asns(ips: pl.DataFrame, asns: pl.DataFrame, n: int = 15) -> pl.DataFrame:
    """The ``n`` AS numbers with the most sessions: their full name (asn_inventory's, else
    the one the IPs' blocks give), registration country, sessions, IPs, and a plot label."""
    from_blocks = ips.group_by("asn").agg(pl.col("asn_org").drop_nulls().mode().sort().first())
    label = pl.format("AS{} {}", "asn", pl.col("name").fill_null("(name unknown)"))
    return (
        ips.filter(pl.col("asn").is_not_null() & ~pl.col("is_bogon"))
        .group_by("asn")
        .agg(pl.col("sessions").sum(), pl.len().cast(pl.Int64).alias("ips"))
        .sort(["sessions", "asn"], descending=[True, False])
        .head(n)
        .join(asns.select("asn", "organization", "country"), on="asn", how="left")
        .join(from_blocks, on="asn", how="left")
        .select(
            "asn",
            pl.coalesce("organization", "asn_org").alias("name"),
            "country",
            "sessions",
            "ips",
        )
        .with_columns(label.alias("label"))
    )


def top_countries(ips: pl.DataFrame, n: int = 15) -> pl.DataFrame:
    """The ``n`` countries with the most sessions (MaxMind's geolocation, else Cymru's
    allocation country), with their full name: MaxMind's English name, also for a country
    only Cymru gave when any IP names it; else the ISO code. "??" (unknown location): neither
    source placed the IP (MaxMind City has no entry and Cymru was not asked: MaxMind had the
    ASN). Counts the IPs `_counted` keeps."""
    names = (
        ips.filter(pl.col("country_name").is_not_null())
        .group_by("country")
        .agg(pl.col("country_name").mode().sort().first().alias("known_name"))
    )
    return (
        _counted(ips)
        .with_columns(pl.col("country").fill_null("??"))
        .group_by("country")
        .agg(pl.col("sessions").sum(), pl.len().cast(pl.Int64).alias("ips"))
        .sort(["sessions", "country"], descending=[True, False])
        .head(n)
        .join(names, on="country", how="left")
        .select(
            "country",
            pl.when(pl.col("country") == "??")
            .then(pl.lit("unknown location"))
            .otherwise(pl.coalesce("known_name", "country"))
            .alias("name"),
            "sessions",
            "ips",
        )
    )


def network_types(ips: pl.DataFrame, providers: int = 10) -> pl.DataFrame:
    """Sessions and IPs by the kind of network an attack comes from (the labels' ``ip_type``,
    in `NETWORK_TYPES` order; `NOT_LABELLED`: no labels block yet) and, for cloud and hosting
    (datacenter) ranges, provider: the ``providers`` providers with the most sessions by name,
    the others as `OTHER_PROVIDERS`. The other types' provider (Tor's "tor", a residential
    IP's AS organization) is "". Counts the IPs `_counted` keeps."""
    kind = pl.col("ip_type").fill_null(NOT_LABELLED)
    hosted = kind.is_in(HOSTED_TYPES)
    by_provider = (
        _counted(ips)
        .with_columns(
            kind.alias("ip_type"),
            pl.when(hosted).then(pl.col("provider").fill_null("")).otherwise(pl.lit("")),
        )
        .group_by("ip_type", "provider")
        .agg(pl.col("sessions").sum(), pl.len().cast(pl.Int64).alias("ips"))
    )
    ranked = (
        by_provider.filter(pl.col("provider") != "")
        .group_by("provider")
        .agg(pl.col("sessions").sum())
        .sort(["sessions", "provider"], descending=[True, False])
        .head(providers)["provider"]
    )
    named = pl.when(pl.col("provider").is_in(ranked.implode()) | (pl.col("provider") == ""))
    order = {name: i for i, name in enumerate(NETWORK_TYPES)}
    return (
        by_provider.with_columns(
            named.then(pl.col("provider")).otherwise(pl.lit(OTHER_PROVIDERS)).alias("provider")
        )
        .group_by("ip_type", "provider")
        .agg(pl.col("sessions").sum(), pl.col("ips").sum())
        .with_columns(pl.col("ip_type").replace_strict(order, default=len(order)).alias("_order"))
        .sort(["_order", "sessions", "provider"], descending=[False, True, False])
        .drop("_order")
    )


def greynoise_classes(ips: pl.DataFrame, new_ips: pl.DataFrame | None = None) -> pl.DataFrame:
    """IPs and sessions by what GreyNoise said, in three groups: `OBSERVED` (its
    classification: malicious, suspicious, benign, or its own ``unknown``), `NOT_OBSERVED`
    (it has not seen the IP: 404 / not found) and `NOT_ANSWERED` (error, not asked: IPv6 on
    the community API, `NEVER_ASKED`). Counts the IPs `_counted` keeps and ``new_ips`` (the
    snapshot's IPs seen only in sessions: never asked): with them, the IPs `coverage`
    counts."""
    if new_ips is None:
        new_ips = pl.DataFrame(schema=NEW_IPS_SCHEMA)
    new = new_ips.select(
        pl.lit(None, pl.String).alias("greynoise_status"),
        pl.lit(None, pl.String).alias("classification"),
        "sessions",
    )
    rows = pl.concat([_counted(ips).select(new.columns), new])
    status = pl.col("greynoise_status")
    answer = (
        pl.when(status == "ok")
        .then(pl.col("classification").fill_null("unknown"))
        .when(status == "not_found")
        .then(pl.lit(NOT_OBSERVED))
        .when(status == "error")
        .then(pl.lit("error"))
        .when(status == "skipped")
        .then(pl.lit("not asked (IPv6)"))
        .otherwise(pl.lit(NEVER_ASKED))
    )
    group = (
        pl.when(status == "ok")
        .then(pl.lit(OBSERVED))
        .when(status == "not_found")
        .then(pl.lit(NOT_OBSERVED))
        .otherwise(pl.lit(NOT_ANSWERED))
    )
    order = pl.col("group").replace_strict([OBSERVED, NOT_OBSERVED, NOT_ANSWERED], [0, 1, 2])
    return (
        rows.group_by(group.alias("group"), answer.alias("answer"))
        .agg(pl.len().cast(pl.Int64).alias("ips"), pl.col("sessions").sum())
        .sort([order, "ips", "answer"], descending=[False, True, False])
    )
