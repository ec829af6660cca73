"""Write path merge rules, property-based, on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.core.errors import DatabaseError
from etl.core.vocabulary import BLOCKS
from etl.db.backends import dialect_for
from etl.db.database import Database
from etl.db.postgres import PostgresBackend
from etl.db.sqlite import SQLiteBackend
from etl.db.url import parse_database_url
from etl.db.write import ChunkWriter, sqlite_timestamp

NOW = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=UTC)
OLD = NOW - timedelta(days=40)

# PostgreSQL jsonb cannot hold U+0000; no source of ours produces it.
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=12)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    text,
    st.floats(-1e6, 1e6, allow_nan=False, width=32),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=6,
)
foreign_keys = st.sampled_from(
    ["dshield", "spur", "urlhaus", "password_stats", "ip_classification", "x y"]
)
# Keys read by PostgreSQL generated columns (country, noise, is_bogon) are typed; see test_refresh_e2e.
blocks = st.dictionaries(
    st.sampled_from(["asn", "status", "cached_at", "weird key"]), json_values, max_size=4
)
existing = st.fixed_dictionaries(
    {},
    optional={
        **{k: json_values for k in ("dshield", "spur", "urlhaus", "password_stats")},
        **{b: blocks for b in BLOCKS},
    },
)
new_blocks = st.fixed_dictionaries({}, optional={b: blocks for b in BLOCKS})
ADDRESSES = [f"198.18.{i}.1" for i in range(8)]
case = st.lists(
    st.tuples(
        st.booleans(), existing, new_blocks, st.one_of(st.none(), st.integers(1, 3)), st.booleans()
    ),
    min_size=1,
    max_size=len(ADDRESSES),
)


def expected_enrichment(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The merge rule: blocks of this run replace whole blocks; every other key is kept."""
    merged = dict(old or {})
    merged.update(new)
    return merged


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(parse_database_url(f"sqlite:///{tmp_path / 'w.sqlite'}"), create=True)
    db.ensure_schema()
    yield db
    db.close()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    db = Database(parse_database_url(pg_url))
    db.ensure_schema()
    yield db
    db.close()


def _seed(db: Database, rows: list[tuple[str, dict[str, Any]]]) -> None:
    asn = (
        "INSERT INTO asn_inventory (asn_number, organization_name, first_seen, last_seen, enrichment, "
        "created_at, updated_at) VALUES ({n}, NULL, {t}, {t}, '{{}}', {t}, {t}) ON CONFLICT DO NOTHING"
    )
    t = (
        f"'{sqlite_timestamp(OLD)}'"
        if db.dialect == "sqlite"
        else f"'{OLD.isoformat()}'::timestamptz"
    )
    statements = [asn.format(n=n, t=t) for n in (1, 2, 3)]
    statements += ["DELETE FROM ip_inventory"]
    for address, enrichment in rows:
        text = json.dumps(enrichment).replace("'", "''")
        statements.append(
            "INSERT INTO ip_inventory (ip_address, current_asn, asn_last_verified, first_seen, last_seen, "
            f"session_count, enrichment, enrichment_updated_at, created_at, updated_at) VALUES "
            f"('{address}', 1, {t}, {t}, {t}, 7, '{text}', {t}, {t}, {t})"
        )
    db.execute_native(statements)


def _read(db: Database) -> dict[str, dict[str, Any]]:
    rows = db.query_native(
        "SELECT ip_address, current_asn, session_count, CAST(enrichment AS TEXT), "
        "CAST(first_seen AS TEXT), CAST(enrichment_updated_at AS TEXT) FROM ip_inventory"
    )
    return {
        r[0]: {
            "current_asn": r[1],
            "session_count": r[2],
            "enrichment": json.loads(r[3]),
            "first_seen": r[4],
            "updated": r[5],
        }
        for r in rows
    }


def check_merge(
    db: Database, rows: list[tuple[bool, dict[str, Any], dict[str, Any], int | None, bool]]
) -> None:
    seeded = [(ADDRESSES[i], old) for i, (exists, old, *_rest) in enumerate(rows) if exists]
    _seed(db, seeded)
    before = _read(db)
    chunk = pl.DataFrame(
        {
            "ip_address": ADDRESSES[: len(rows)],
            "current_asn": [asn for *_x, asn, _t in rows],
            "first_seen": [OLD - timedelta(days=3)] * len(rows),
            "last_seen": [OLD] * len(rows),
            "session_count": [2] * len(rows),
            "touched": [int(t) for *_x, t in rows],
            **{
                b: [json.dumps(new[b]) if b in new else None for _e, _o, new, _a, _t in rows]
                for b in BLOCKS
            },
        },
        schema_overrides={
            "current_asn": pl.Int64,
            "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
            **{b: pl.String for b in BLOCKS},
        },
    )
    asns = pl.DataFrame(
        {
            "asn_number": [1, 2, 3],
            "organization_name": ["one", "two", "x'); DROP TABLE ip_inventory;--"],
            "organization_country": [None, "GB", None],
            "rir_registry": [None, "ripencc", None],
        },
        schema_overrides={"organization_country": pl.String, "rir_registry": pl.String},
    )
    writer = ChunkWriter(db)
    try:
        writer.write(chunk, asns, NOW)
    finally:
        writer.close()
    after = _read(db)
    for index, (exists, old, new, asn, touched) in enumerate(rows):
        address = ADDRESSES[index]
        row = after[address]
        assert row["enrichment"] == expected_enrichment(old if exists else None, new), address
        assert row["current_asn"] == (asn if asn is not None else (1 if exists else None))
        assert row["session_count"] == (7 if exists else 2)
        if exists:
            assert row["first_seen"] == before[address]["first_seen"]
            if not touched:
                assert row["updated"] == before[address]["updated"]
        assert (row["updated"] is not None) == (touched or exists)
    names = dict(db.query_native("SELECT asn_number, organization_name FROM asn_inventory"))
    assert names[3] == "x'); DROP TABLE ip_inventory;--"


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case)
def test_sqlite_merge_rules(sqlite_db: Database, rows: Any) -> None:
    check_merge(sqlite_db, rows)


@pytest.mark.postgres
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case)
def test_postgres_merge_rules(pg_db: Database, rows: Any) -> None:
    check_merge(pg_db, rows)


def test_sqlite_timestamps_in_cowrieprocessor_text_form(
    sqlite_db: Database, tmp_path: Path
) -> None:
    check_merge(sqlite_db, [(False, {}, {"validation": {"is_bogon": False}}, 2, True)])
    con = sqlite3.connect(tmp_path / "w.sqlite")
    row = con.execute(
        "SELECT first_seen, last_seen, enrichment_updated_at, asn_last_verified, created_at "
        "FROM ip_inventory"
    ).fetchone()
    assert (
        row
        == (sqlite_timestamp(OLD - timedelta(days=3)), sqlite_timestamp(OLD))
        + (sqlite_timestamp(NOW),) * 3
    )
    assert sqlite_timestamp(NOW) == "2026-11-28 12:00:00.123456"
    leftovers = con.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE '_etl_stage%'"
    ).fetchall()
    assert leftovers == []


def test_sqlite_old_enrichment_that_is_not_json_fails_the_chunk_and_is_kept(
    sqlite_db: Database,
) -> None:
    """Rows with broken JSON are never selected; one broken after the selection (by another
    writer) fails its chunk instead of losing what it held."""
    sqlite_db.execute_native(
        [
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, enrichment) "
            "VALUES ('198.18.0.1', '2026-01-01', '2026-01-01', '{broken')"
        ]
    )
    chunk = pl.DataFrame(
        {
            "ip_address": ["198.18.0.1"],
            "current_asn": [None],
            "first_seen": [None],
            "last_seen": [None],
            "session_count": [None],
            "touched": [1],
            **{b: ['{"status": "ok"}'] if b == "maxmind" else [None] for b in BLOCKS},
        },
        schema_overrides={
            "current_asn": pl.Int64,
            "first_seen": pl.Datetime("us", "UTC"),
            "last_seen": pl.Datetime("us", "UTC"),
            "session_count": pl.Int64,
            **{b: pl.String for b in BLOCKS},
        },
    )
    asns = pl.DataFrame(schema={c: pl.Int64 if c == "asn_number" else pl.String for c in (
        "asn_number", "organization_name", "organization_country", "rir_registry")})  # fmt: skip
    writer = ChunkWriter(sqlite_db)
    try:
        with pytest.raises(DatabaseError, match="malformed JSON"):
            writer.write(chunk, asns, NOW)
    finally:
        writer.close()
    rows = sqlite_db.query_native("SELECT enrichment FROM ip_inventory")
    assert rows == [("{broken",)]


@pytest.mark.parametrize(
    "dialect", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_write_unit_is_one_transaction(dialect: str, request: pytest.FixtureRequest) -> None:
    """A chunk's stages and merge go in together: when the second insert fails, the first is
    undone; the unit then works as a whole."""
    db: Database = request.getfixturevalue(f"{'sqlite' if dialect == 'sqlite' else 'pg'}_db")
    asns = pl.DataFrame({"asn_number": [7], "organization_name": ["seven"]})
    no_first_seen = pl.DataFrame(
        {"ip_address": ["198.18.0.9"], "first_seen": [None]},
        schema_overrides={"first_seen": pl.Datetime("us", "UTC")},
    )
    writer = ChunkWriter(db)
    asn_stage, ip_stage = writer._stage_name(writer.asn_stage), writer._stage_name(writer.ip_stage)
    try:
        with pytest.raises(DatabaseError, match="database write failed"):
            db.write([(asn_stage, asns), ("ip_inventory", no_first_seen)], ())
        assert db.query_native(f"SELECT count(*) FROM {asn_stage}") == [(0,)]
        db.write([(asn_stage, asns), (ip_stage, no_first_seen)], ())
        assert db.query_native(f"SELECT count(*) FROM {asn_stage}") == [(1,)]
        assert db.query_native(f"SELECT count(*) FROM {ip_stage}") == [(1,)]
    finally:
        writer.close()


def test_each_dialect_has_its_backend(tmp_path: Path) -> None:
    """`dialect_for` picks the URL's backend; each tells its own transient errors (retried)
    from the others (a failed unit)."""
    path = tmp_path / "busy.sqlite"
    sqlite = dialect_for(parse_database_url(f"sqlite:///{path}"))
    postgres = dialect_for(parse_database_url("postgresql://etl:secret@db.example:6543/honey"))
    assert (type(sqlite), sqlite.name) == (SQLiteBackend, "sqlite")
    assert (type(postgres), postgres.name) == (PostgresBackend, "postgres")

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        other.execute("SELEC 1")
    holder.close()
    other.close()
    assert sqlite.transient(busy.value) == f"another process holds the write lock on {path}"
    assert sqlite.transient(syntax.value) is None

    lost = duckdb.Error("IO Error: server closed the connection unexpectedly (password secret)")
    reason = postgres.transient(lost)
    assert reason is not None and "lost the connection" in reason and "secret" not in reason
    assert postgres.transient(duckdb.Error('ERROR: syntax error at or near "SELEC"')) is None
    assert postgres.transient(busy.value) is None
    assert sqlite.transient(lost) is None


def test_kept_answers_live_beside_a_file_or_in_the_state_folder(tmp_path: Path) -> None:
    sqlite = dialect_for(parse_database_url(f"sqlite:///{tmp_path / 'h.sqlite'}"))
    postgres = dialect_for(parse_database_url("postgresql://etl@db.example:6543/honey"))
    assert sqlite.pending_folder(tmp_path / "state") == tmp_path / "h.sqlite.etl-pending"
    assert postgres.pending_folder(tmp_path) == tmp_path / "db.example_6543_honey"


def test_nothing_to_keep_leaves_no_folder(tmp_path: Path) -> None:
    from etl.db.pending import PendingAnswers

    pending = PendingAnswers(tmp_path / "h.sqlite.etl-pending")
    assert pending.save({"ips": pl.DataFrame(), "asns": pl.DataFrame()}) == []
    assert not pending.folder.exists()  # it was left empty after every SIGTERM
    [kept] = pending.save({"ips": pl.DataFrame({"ip": ["198.51.100.1"]}), "asns": pl.DataFrame()})
    assert kept.parent == pending.folder and kept.name.endswith(".ips.parquet")
