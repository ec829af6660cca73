"""Sessions the loader could not link, and linking them (SPEC 2).

cowrieprocessor's loader sets ``session_summaries.source_ip`` only when the IP already has an
``ip_inventory`` row; otherwise it leaves ``source_ip`` and the snapshot columns NULL, and the
address is only in the session's ``raw_events.payload`` (``$.src_ip``). So each run:

- `find_sessions` finds the IPs of sessions whose ``source_ip`` is NULL from their raw events
  (the ``src_ip`` of the lowest-id event that has one, as the loader picks it; one longer than
  45 characters, which no inventory row can hold, counts as none), through the
  ``raw_events(session_id)`` index: the cost grows with the unlinked sessions, not with
  raw_events. Events loaded before ``raw_events.session_id`` existed name their session only
  in ``payload.session``; they are read only for sessions not found otherwise. It also finds
  the sessions whose ``source_ip`` has no inventory row (databases migrated by v16).
- `SessionLinker` links them once their IP's row is written: sets ``source_ip`` where it is
  NULL, and fills ``snapshot_asn``, ``snapshot_country``, ``enrichment_at`` where they are
  NULL, as the loader would have at ingest, and ``snapshot_ip_type`` with the labels' type
  (not ``unknown``; SPEC 3.4) of every session of a written IP, whoever linked it. Never
  another column, never a non-NULL value.
- A session whose events carry no usable ``src_ip`` is recorded in our table
  ``etl_session_checks`` with its last event id, and read again only when it gets new events.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field

import polars as pl

from etl.db.database import Database
from etl.db.ddl import SESSION_CHECKS_TABLE, session_checks_ddl
from etl.db.dialect import sql_string

MAX_IP_LENGTH = 45  # ip_inventory.ip_address is VARCHAR(45)
# Sessions linked per transaction: short transactions (about 0.3 s each), for the write lock
# the loader waits for on SQLite. On PostgreSQL 50,000 per transaction were no faster in all
# (12.6 s against 13.4 s for 100,000 sessions) and held one for 7 s.
LINK_BATCH_SESSIONS = 5_000
LEGACY_BATCH = 5_000  # sessions looked for at once among the events without session_id

SESSIONS_SCHEMA = {
    "session_id": pl.String,
    "ip": pl.String,
    "first_event_at": pl.String,
    "last_event_at": pl.String,
    "unlinked": pl.Boolean,  # source_ip is NULL (found through raw events)
    "has_row": pl.Boolean,  # the IP has an ip_inventory row already
}
_CHECKS_SCHEMA = {"session_id": pl.String, "last_event_id": pl.Int64}


# -- SQL per dialect -------------------------------------------------------------------------
def _src_ip(db: Database, payload: str, key: str = "src_ip") -> str:
    """SQL: the value ``key`` of a raw event's payload as text (NULL when absent; a value
    that is not a string gives its JSON text, which then fails validation like any string
    that is no address). PostgreSQL reads ``json`` text once per operator: no type check,
    which would parse each payload twice (measured: 2.6 s against 4.9 s per 100,000)."""
    if db.dialect == "sqlite":
        return f"CASE WHEN json_valid({payload}) THEN json_extract({payload}, '$.{key}') END"
    return f"(({payload})::json ->> '{key}')"


def _usable(expression: str) -> str:
    return f"length({expression}) BETWEEN 1 AND {MAX_IP_LENGTH}"


def _table(db: Database, name: str) -> str:
    return db.backend.native_table(name)


def _unlinked_sql(db: Database, checked: bool) -> str:
    """Sessions with source_ip NULL: their canonical IP from their raw events, whether it has
    an inventory row, and, for those without one, their last event's id."""
    src = _src_ip(db, "r.payload")
    raw, inventory = _table(db, "raw_events"), _table(db, "ip_inventory")
    skip = (
        f"AND NOT EXISTS (SELECT 1 FROM {_table(db, SESSION_CHECKS_TABLE)} AS c "
        f"WHERE c.session_id = s.session_id "
        f"AND c.last_event_id >= coalesce({_last_event_id(raw, 's')}, 0))"
        if checked
        else ""
    )
    # The address subquery runs once per session: without the fence (OFFSET 0; SQLite needs
    # its LIMIT -1 too) the planner copies it into each use of ``ip``, three times.
    fence = "LIMIT -1 OFFSET 0" if db.dialect == "sqlite" else "OFFSET 0"
    return f"""
        SELECT d.session_id, d.ip, d.first_event_at, d.last_event_at,
               CASE WHEN EXISTS (SELECT 1 FROM {inventory} AS i WHERE i.ip_address = d.ip)
                    THEN 1 ELSE 0 END AS has_row,
               CASE WHEN d.ip IS NULL THEN {_last_event_id(raw, "d")} END AS last_event_id
        FROM (SELECT CAST(s.session_id AS TEXT) AS session_id,
                     CAST(s.first_event_at AS TEXT) AS first_event_at,
                     CAST(s.last_event_at AS TEXT) AS last_event_at,
                     (SELECT {src} FROM {raw} AS r
                      WHERE r.session_id = s.session_id AND {_usable(src)}
                      ORDER BY r.id + 0 LIMIT 1) AS ip
              FROM {_table(db, "session_summaries")} AS s
              WHERE s.source_ip IS NULL {skip}
              {fence}) AS d"""


def _last_event_id(raw: str, sessions: str) -> str:
    """SQL: the id of the last raw event of the session ``<sessions>.session_id``.

    ``r.id + 0`` (also in the address subquery): never walk the primary key in order,
    filtered by session, PostgreSQL's plan for ``max(id)`` and ``ORDER BY id LIMIT 1`` while
    raw_events has no statistics yet, as right after a load (minutes); the session's few
    events come from its index.
    """
    return f"(SELECT max(r.id + 0) FROM {raw} AS r WHERE r.session_id = {sessions}.session_id)"


def _orphans_sql(db: Database) -> str:
    """Sessions whose source_ip has no inventory row (the distinct addresses first, through
    the source_ip index; then their sessions)."""
    sessions, inventory = _table(db, "session_summaries"), _table(db, "ip_inventory")
    return f"""
        SELECT CAST(s.session_id AS TEXT), CAST(s.source_ip AS TEXT),
               CAST(s.first_event_at AS TEXT), CAST(s.last_event_at AS TEXT)
        FROM {sessions} AS s
        WHERE s.source_ip IN (
            SELECT o.ip FROM (SELECT DISTINCT source_ip AS ip FROM {sessions}
                              WHERE source_ip IS NOT NULL) AS o
            WHERE NOT EXISTS (SELECT 1 FROM {inventory} AS i WHERE i.ip_address = o.ip))"""


# -- finding ---------------------------------------------------------------------------------
@dataclass
class FoundSessions:
    """What `find_sessions` found: ``sessions`` (columns of `SESSIONS_SCHEMA`: every session
    to link, or of an IP without a row), ``unresolved`` (sessions with source_ip NULL whose
    raw events name no address), ``notes`` for the operator."""

    sessions: pl.DataFrame
    unresolved: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_CHECKS_SCHEMA))
    notes: list[str] = field(default_factory=list)

    def of_new_ips(self) -> pl.DataFrame:
        """The sessions of IPs that have no inventory row yet."""
        return self.sessions.filter(~pl.col("has_row"))

    def to_link(self) -> pl.DataFrame:
        """Sessions with source_ip NULL and the IP to set: ``session_id``, ``ip``."""
        return self.sessions.filter(pl.col("unlinked")).select("session_id", "ip")

    def only(self, ips: tuple[str, ...]) -> FoundSessions:
        """The sessions of these IPs (all when ``ips`` is empty)."""
        if not ips:
            return self
        kept = self.sessions.filter(pl.col("ip").is_in(list(ips)))
        return FoundSessions(kept, self.unresolved.clear(), self.notes)


def find_sessions(db: Database) -> FoundSessions:
    """The sessions the run must link or whose IPs it must create (see the module docstring).
    Reads only; `record_unresolved` writes what was not found."""
    if not db.columns("session_summaries"):
        return FoundSessions(pl.DataFrame(schema=SESSIONS_SCHEMA))
    orphans = pl.DataFrame(
        db.query_native(_orphans_sql(db)),
        schema=["session_id", "ip", "first_event_at", "last_event_at"],
        orient="row",
    ).with_columns(unlinked=pl.lit(False), has_row=pl.lit(False))
    raw_columns = db.columns("raw_events")
    if "payload" not in raw_columns or "id" not in raw_columns:
        found = FoundSessions(orphans.cast(SESSIONS_SCHEMA))  # type: ignore[arg-type]
        if db.query_native(_count_unlinked_sql(db))[0][0]:
            found.notes.append(
                "session_summaries has sessions without source_ip, and there is no raw_events "
                "table to find their addresses in: they stay unlinked"
            )
        return found
    unlinked = _unlinked(db, "session_id" in raw_columns)
    sessions = pl.concat([orphans.cast(SESSIONS_SCHEMA), unlinked.sessions], how="vertical")  # type: ignore[arg-type]
    return FoundSessions(sessions, unlinked.unresolved)


def _count_unlinked_sql(db: Database) -> str:
    return f"SELECT count(*) FROM {_table(db, 'session_summaries')} WHERE source_ip IS NULL"


def _unlinked(db: Database, has_session_column: bool) -> FoundSessions:
    """Sessions with source_ip NULL and their canonical IPs from raw events."""
    checked = bool(db.columns(SESSION_CHECKS_TABLE))
    if has_session_column:
        rows = db.query_native(_unlinked_sql(db, checked))
    else:  # raw events from before raw_events.session_id: every session is a legacy one,
        # and one found without an address is not read again (no index tells new events)
        skip = (
            f"AND session_id NOT IN (SELECT session_id FROM {_table(db, SESSION_CHECKS_TABLE)})"
            if checked
            else ""
        )
        rows = db.query_native(  # the columns of `_unlinked_sql`, no address yet
            "SELECT CAST(session_id AS TEXT), CAST(NULL AS TEXT), CAST(first_event_at AS TEXT), "
            f"CAST(last_event_at AS TEXT), 0, CAST(NULL AS BIGINT) "
            f"FROM {_table(db, 'session_summaries')} WHERE source_ip IS NULL {skip}"
        )
    frame = pl.DataFrame(
        rows,
        schema={
            "session_id": pl.String,
            "ip": pl.String,
            "first_event_at": pl.String,
            "last_event_at": pl.String,
            "has_row": pl.Int64,
            "last_event_id": pl.Int64,
        },
        orient="row",
    )
    missing = frame.filter(pl.col("ip").is_null())
    if missing.height:
        legacy = _legacy_addresses(db, missing["session_id"], has_session_column)
        frame = frame.update(legacy, on="session_id", how="left")
    resolved = frame.filter(pl.col("ip").is_not_null())
    sessions = resolved.select(
        "session_id",
        "ip",
        "first_event_at",
        "last_event_at",
        unlinked=pl.lit(True),
        has_row=pl.col("has_row") == 1,
    )
    unresolved = frame.filter(pl.col("ip").is_null()).select(
        "session_id", pl.col("last_event_id").fill_null(0)
    )
    return FoundSessions(sessions, unresolved)


def _legacy_addresses(db: Database, wanted: pl.Series, has_session_column: bool) -> pl.DataFrame:
    """For sessions not found through ``raw_events.session_id``: events that name their
    session only in ``payload.session``. Each batch of `LEGACY_BATCH` such sessions reads
    the events without ``session_id`` once (through its index; all events on a schema from
    before the column), keeping only theirs; this happens while such sessions are new
    (sessions found without an address are not read again). Columns ``session_id``, ``ip``,
    ``has_row``, ``last_event_id``."""
    raw = _table(db, "raw_events")
    where = "session_id IS NULL AND " if has_session_column else ""
    session, src = _src_ip(db, "payload", "session"), _src_ip(db, "payload")
    ids = wanted.unique().to_list()
    rows = []
    for start in range(0, len(ids), LEGACY_BATCH):
        listed = ", ".join(sql_string(str(i)) for i in ids[start : start + LEGACY_BATCH])
        rows += db.query_native(
            f"SELECT {session} AS sid, id, {src} AS ip FROM {raw} "
            f"WHERE {where}{session} IN ({listed})"
        )
    events = pl.DataFrame(
        rows, schema={"session_id": pl.String, "id": pl.Int64, "ip": pl.String}, orient="row"
    )
    usable = pl.col("ip").str.len_chars().is_between(1, MAX_IP_LENGTH)
    found = (
        events.sort("id")
        .group_by("session_id")
        .agg(
            pl.col("ip").filter(usable).first(),
            pl.col("id").max().alias("legacy_last_id"),
        )
    )
    known = _known_ips(db, found["ip"].drop_nulls().unique().to_list())
    return found.select(
        "session_id",
        "ip",
        has_row=pl.col("ip").is_in(list(known)).cast(pl.Int64),
        last_event_id=pl.col("legacy_last_id"),
    )


def _known_ips(db: Database, ips: list[str]) -> set[str]:
    """Which of ``ips`` have an inventory row (in batches of bound literals)."""
    known: set[str] = set()
    for start in range(0, len(ips), 1000):
        values = ", ".join(sql_string(ip) for ip in ips[start : start + 1000])
        rows = db.query_native(
            f"SELECT ip_address FROM {_table(db, 'ip_inventory')} WHERE ip_address IN ({values})"
        )
        known.update(str(row[0]) for row in rows)
    return known


def without_address(db: Database, found: FoundSessions) -> int:
    """Sessions without source_ip whose raw events name no address: found now, or by an
    earlier run and not found with one since."""
    known: list[str] = []
    if db.columns(SESSION_CHECKS_TABLE):
        known = [
            str(row[0])
            for row in db.query_native(
                f"SELECT c.session_id FROM {_table(db, SESSION_CHECKS_TABLE)} AS c "
                f"JOIN {_table(db, 'session_summaries')} AS s ON s.session_id = c.session_id "
                "WHERE s.source_ip IS NULL"
            )
        ]
    ids = pl.concat([found.unresolved["session_id"], pl.Series(known, dtype=pl.String)])
    return ids.unique().filter(~ids.unique().is_in(found.sessions["session_id"].implode())).len()


def record_unresolved(db: Database, unresolved: pl.DataFrame, now: str) -> None:
    """Remember sessions whose raw events name no address, with their last event id: they
    are read again only once they have newer events (in our table `SESSION_CHECKS_TABLE`,
    created when first needed)."""
    if not unresolved.height:
        return
    if not db.columns(SESSION_CHECKS_TABLE):  # made the first time it has something to hold
        db.execute_native([session_checks_ddl(db.dialect)])
        db.refresh_catalog()
    frame = unresolved.with_columns(checked_at=pl.lit(now))
    if db.dialect == "postgres":  # through a staging table: one statement
        db.upsert(SESSION_CHECKS_TABLE, frame, "session_id")
        return
    upsert = (  # SQLite: one statement per batch (its upsert is one transaction per row)
        f"INSERT INTO {SESSION_CHECKS_TABLE} (session_id, last_event_id, checked_at) "
        "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), :now "
        "FROM json_each(:rows) WHERE true "
        "ON CONFLICT (session_id) DO UPDATE SET last_event_id = excluded.last_event_id, "
        "checked_at = excluded.checked_at"
    )
    for part in unresolved.iter_slices(LINK_BATCH_SESSIONS):
        rows = json.dumps(part.select("session_id", "last_event_id").rows())
        db.execute_native([upsert], {"rows": rows, "now": now})


# -- linking ---------------------------------------------------------------------------------
LINK_STAGE_COLUMNS = {"session_id": "VARCHAR", "ip": "VARCHAR"}
COUNT_STAGE_COLUMNS = {"name": "VARCHAR", "n": "BIGINT"}


class SessionLinker:
    """Links sessions to their IPs' rows and fills their NULL snapshots (see the module
    docstring), one transaction per call of `link`, right after the rows are written.

    ``sessions``: the sessions with source_ip NULL and their IPs (`FoundSessions.to_link`).
    Counts are kept in a staging table of the run and read by `counts`.
    """

    def __init__(self, db: Database, sessions: pl.DataFrame) -> None:
        self.db = db
        self.backend = db.backend
        self.sessions = sessions
        tag = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.stage = self.backend.stage_table(f"_etl_link_{tag}")
        self.count_stage = self.backend.stage_table(f"_etl_counts_{tag}")
        self.db.execute_scratch(
            [
                self.backend.create_stage(f"_etl_link_{tag}", LINK_STAGE_COLUMNS),
                self.backend.create_stage(f"_etl_counts_{tag}", COUNT_STAGE_COLUMNS),
            ]
        )
        # PostgreSQL: TRUNCATE, not DELETE, whose dead rows every later scan of the stage
        # would read again (linking 1,000,000 sessions took 388 s instead of 35 s).
        self._empty = (
            f"TRUNCATE {self.stage}" if db.dialect == "postgres" else f"DELETE FROM {self.stage}"
        )
        self._statements = _link_statements(db, self.stage, self.count_stage)

    def link(self, ips: pl.Series) -> None:
        """Link the sessions of ``ips`` (whose rows are written) and fill the NULL snapshots
        of all their sessions. One transaction per `LINK_BATCH_SESSIONS` sessions to link
        (an IP's many sessions over several), so that the write lock is held briefly; an
        IP's other sessions are filled with its last batch."""
        if not ips.len():
            return
        chosen = pl.DataFrame({"ip": ips.unique()}, schema={"ip": pl.String}).sort("ip")
        pairs = (
            self.sessions.join(chosen, on="ip", how="semi")
            .sort("ip", "session_id")
            .with_columns((pl.int_range(pl.len()) // LINK_BATCH_SESSIONS).alias("batch"))
        )
        # Rows without a session mark an IP whose other sessions are filled: in the batch of
        # its last session; IPs with none to link, a batch per LINK_BATCH_SESSIONS after.
        last = pairs.group_by("ip").agg(pl.col("batch").max())
        marks = chosen.join(last, on="ip", how="left")
        after = int(pairs["batch"].max()) + 1 if pairs.height else 0  # type: ignore[arg-type]
        spare = pl.int_range(pl.len()) // LINK_BATCH_SESSIONS + after
        marks = marks.with_columns(pl.col("batch").fill_null(spare.cast(pl.Int64)))
        marks = marks.select(pl.lit(None, pl.String).alias("session_id"), "ip", "batch")
        stage = pl.concat([pairs, marks.cast(pairs.schema)], how="vertical")
        for _, part in stage.group_by("batch", maintain_order=True):
            self.db.write(
                [(self.stage, part.drop("batch"))],
                [*self._statements, self._empty],
                action="linking sessions",
            )

    def counts(self) -> dict[str, int]:
        """Sessions linked (``linked``) and sessions whose snapshots were filled (``filled``)
        so far."""
        rows = self.db.query_native(f"SELECT name, sum(n) FROM {self.count_stage} GROUP BY name")
        counts = {"linked": 0, "filled": 0}
        counts.update({str(name): int(total or 0) for name, total in rows})
        return counts

    def close(self) -> None:
        """Drop the staging tables."""
        self.db.execute_scratch(
            [f"DROP TABLE IF EXISTS {name}" for name in (self.stage, self.count_stage)]
        )


def _link_statements(db: Database, stage: str, counts: str) -> list[str]:
    """Three statements, each counted into ``counts``: the sessions of the stage whose
    snapshots the link fills are counted; they are linked (source_ip where NULL, for IPs that
    have a row) and their NULL snapshots filled in the same row write; then the NULL snapshots
    of the other sessions of the IPs staged without a session are filled."""
    sessions, inventory = _table(db, "session_summaries"), _table(db, "ip_inventory")
    values = _row_values(db, inventory, f"SELECT ip FROM {stage}")
    # The staged sessions are found by their key. PostgreSQL must not start from the
    # sessions whose source_ip is NULL: with statistics from before a load it took them for a
    # handful and joined the stage to each (47 s for one batch); on a table of mostly unlinked
    # sessions it would read them all for every batch. An expression has no index and no
    # statistics, so the plan starts from the stage.
    unlinked = "s.source_ip IS NULL" if db.dialect == "sqlite" else "(s.source_ip || '') IS NULL"
    # The labels' type too, where the table has the column (SPEC 3.4; upstream's v16 has it).
    typed = "snapshot_ip_type" in db.columns("session_summaries")
    fillable = (
        "((s.snapshot_asn IS NULL AND v.asn IS NOT NULL)"
        " OR (s.snapshot_country IS NULL AND v.country IS NOT NULL)"
        + (" OR (s.snapshot_ip_type IS NULL AND v.ip_type IS NOT NULL)" if typed else "")
        + " OR (s.enrichment_at IS NULL AND v.enriched IS NOT NULL))"
    )
    filled = (
        """snapshot_asn = coalesce(s.snapshot_asn, v.asn),
            snapshot_country = coalesce(s.snapshot_country, v.country),"""
        + (
            """
            snapshot_ip_type = coalesce(s.snapshot_ip_type, v.ip_type),"""
            if typed
            else ""
        )
        + """
            enrichment_at = coalesce(s.enrichment_at, v.enriched)"""
    )
    to_link = f"""(SELECT DISTINCT l.session_id, l.ip, v.asn, v.country, v.ip_type, v.enriched
              FROM {stage} AS l JOIN {values} AS v ON v.ip = l.ip
              WHERE l.session_id IS NOT NULL) AS v"""
    count_filled = f"""INSERT INTO {counts}
        SELECT 'filled', count(*) FROM {sessions} AS s JOIN {to_link}
            ON s.session_id = v.session_id
        WHERE {unlinked} AND {fillable}"""
    link = f"""UPDATE {sessions} AS s SET source_ip = v.ip, {filled}
        FROM {to_link}
        WHERE s.session_id = v.session_id AND {unlinked}"""
    fill_values = _row_values(db, inventory, f"SELECT ip FROM {stage} WHERE session_id IS NULL")
    fill_others = f"""UPDATE {sessions} AS s SET {filled}
        FROM {fill_values} AS v
        WHERE s.source_ip = v.ip AND {fillable}"""
    if db.dialect == "sqlite":
        linked = [link, f"INSERT INTO {counts} SELECT 'linked', changes()"]
        filling = [fill_others, f"INSERT INTO {counts} SELECT 'filled', changes()"]
    else:
        count = "INSERT INTO {counts} SELECT '{name}', count(*) FROM u"
        linked = [f"WITH u AS ({link} RETURNING 1) " + count.format(counts=counts, name="linked")]
        filling = [
            f"WITH u AS ({fill_others} RETURNING 1) " + count.format(counts=counts, name="filled")
        ]
    # PostgreSQL: the stage's statistics first (it has none, being new or emptied), and no
    # sequential scans: with statistics from when session_summaries was small (autovacuum
    # during a load) the planner scanned it for each staged session, 15-28 s per batch
    # beside the loader. The stage is still read whole; sessions are found by their keys.
    # That makes every plan look dear, so PostgreSQL compiled each statement (JIT): 0.27 s of
    # a 0.38 s statement, three per batch. Compiling cannot pay off for one batch's rows.
    # Nor can a merge join: the planner took the sessions of a batch's IPs for a few hundred
    # and merged the stage with the whole source_ip index, every batch (2.6 s per batch on
    # 2,300,000 sessions, 20 minutes to link them). Filling the sessions of the batch's IPs,
    # each IP's sessions are found by their index (no hash join either: it would read the
    # whole index as well); linking keeps its hash join of the stage and the rows (without
    # it, 8 s per batch).
    if db.dialect == "sqlite":
        return [count_filled, *linked, *filling]
    tuned = [
        f"ANALYZE {stage}",
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL enable_mergejoin = off",
        "SET LOCAL jit = off",
    ]
    return [*tuned, count_filled, *linked, "SET LOCAL enable_hashjoin = off", *filling]


def _row_values(db: Database, inventory: str, ips: str) -> str:
    """A subquery of the values a session copies from its IP's row (SPEC 2), for the rows
    of the IPs ``ips`` selects: ``asn`` = current_asn, ``country`` = the upper-cased
    coalesce(maxmind.country, cymru.country, dshield.ip.ascountry), only a two-letter code
    and never the 'XX' fallback, ``ip_type`` = the labels' type but ``unknown`` (SPEC 3.4),
    ``enriched`` = enrichment_updated_at."""
    if db.dialect == "sqlite":
        enrichment = "CASE WHEN json_valid(i.enrichment) THEN i.enrichment END"
        raw = (
            f"upper(coalesce(json_extract({enrichment}, '$.maxmind.country'), "
            f"json_extract({enrichment}, '$.cymru.country'), "
            f"json_extract({enrichment}, '$.dshield.ip.ascountry')))"
        )
        iso = f"{raw} GLOB '[A-Z][A-Z]'"
        ip_type = f"json_extract({enrichment}, '$.ip_classification.ip_type')"
    else:
        # Each row's JSON parsed once: the subqueries are fences (OFFSET 0), or every
        # reference would parse it again (11 parses per row, most of a relabel's write time).
        return f"""(SELECT i.ip_address AS ip, i.current_asn AS asn,
                   CASE WHEN j.raw ~ '^[A-Z]{{2}}$' AND j.raw <> 'XX' THEN j.raw END AS country,
                   CASE WHEN j.ip_type <> 'unknown' THEN j.ip_type END AS ip_type,
                   i.enrichment_updated_at AS enriched
            FROM {inventory} AS i CROSS JOIN LATERAL (
                SELECT upper(coalesce(e -> 'maxmind' ->> 'country', e -> 'cymru' ->> 'country',
                                      e -> 'dshield' -> 'ip' ->> 'ascountry')) AS raw,
                       e -> 'ip_classification' ->> 'ip_type' AS ip_type
                FROM (SELECT i.enrichment::jsonb AS e OFFSET 0) AS parsed OFFSET 0) AS j
            WHERE i.ip_address IN ({ips}))"""
    return f"""(SELECT i.ip_address AS ip, i.current_asn AS asn,
                   CASE WHEN {iso} AND {raw} <> 'XX' THEN {raw} END AS country,
                   CASE WHEN {ip_type} <> 'unknown' THEN {ip_type} END AS ip_type,
                   i.enrichment_updated_at AS enriched
            FROM {inventory} AS i WHERE i.ip_address IN ({ips}))"""
