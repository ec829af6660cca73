"""Bad input (property tests): whatever an inventory holds, the refresh neither crashes nor
damages what it cannot use; valid rows are refreshed."""

from __future__ import annotations

import ipaddress
import json
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl.core.vocabulary import Source
from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from testbed.sample.mmdb_files import write_maxmind_files
from testbed.sample.world import World
from tests.conftest import SHARED, SHARED_ABSENT

GLOBAL_V4 = ["8.8.8.8", "74.125.225.229", "1.2.3.4", "169.226.11.11", "107.180.1.2"]
addresses = st.one_of(
    st.sampled_from(GLOBAL_V4),
    st.sampled_from(GLOBAL_V4).map(lambda ip: f" {ip} "),  # spaces: never trimmed
    st.sampled_from(["::ffff:8.8.8.8", "2001:4860:4860::8888", "2001:4860:4860:0:0:0:0:8888",
                     "2001:4860:4860::8888".upper(), "fe80::1", "10.0.0.1", "999.1.1.1",
                     "1.2.3.4/24", "01.2.3.4", "", "not-an-ip"]),
    st.text(max_size=60),
    st.text(min_size=200, max_size=400),  # huge strings
)  # fmt: skip
enrichments = st.one_of(
    st.just("{}"),
    st.just('{"dshield": {"count": 3}, "spur": ["x"]}'),
    st.sampled_from(["[]", '"text"', "42", "null", "{not json", ""]),  # unusable
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3).map(json.dumps),
    st.text(max_size=80),
)


COLUMNS = (
    "SELECT ip_address, first_seen, last_seen, session_count, enrichment, current_asn, "
    "enrichment_updated_at, created_at, updated_at FROM ip_inventory"
)


def usable(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def valid_global(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return (
        text == text.strip()
        and "/" not in text
        and address.is_global
        and not (address.version == 6 and address.ipv4_mapped is not None)
    )


@pytest.fixture(scope="module")
def maxmind(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mm")
    write_maxmind_files(World(1), folder)
    return folder


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.dictionaries(addresses, enrichments, min_size=1, max_size=12))
@example(rows={" 8.8.8.8 ": '{"maxmind":""}'})  # an invalid address keeps its old maxmind key
def test_any_inventory_refreshes_without_damage(maxmind: Path, rows: dict[str, str]) -> None:
    if not SHARED.is_dir():
        pytest.skip(SHARED_ABSENT)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.sqlite"
        con = sqlite3.connect(path)
        con.executescript((SHARED / "compat" / "cowrieprocessor-sqlite.sql").read_text())
        stamp = "2026-11-01 10:00:00.000000"
        con.executemany(
            "INSERT INTO ip_inventory (ip_address, first_seen, last_seen, session_count, "
            "enrichment, created_at, updated_at) VALUES (?, ?, ?, 2, ?, ?, ?)",
            [(ip, stamp, stamp, text, stamp, stamp) for ip, text in rows.items()],
        )
        con.commit()
        before = {r[0]: r for r in con.execute(COLUMNS)}
        config = RefreshConfig(
            db_url=f"sqlite:///{path}", maxmind_dir=maxmind,
            skip=frozenset({Source.CYMRU, Source.GREYNOISE}),
        )  # fmt: skip
        summary = refresh(config, LineReporter(verbosity=-1))
        after = {r[0]: r for r in con.execute(COLUMNS)}
        con.close()
    assert set(after) == set(before)  # no row added or lost
    assert summary.unusable == sum(not usable(text) for text in rows.values())
    for ip, text in rows.items():
        old, new = before[ip], after[ip]
        assert new[1:4] == old[1:4]  # first_seen, last_seen, session_count
        if not usable(text):
            assert new == old  # left exactly as it was
            continue
        enrichment = json.loads(new[4])
        kept = {k: v for k, v in json.loads(text).items() if k not in ("validation", "maxmind")}
        assert {k: enrichment[k] for k in kept} == kept  # keys we do not own are kept
        if valid_global(ip):
            assert enrichment["validation"] == {"is_bogon": False, "reason": None}
            assert enrichment["maxmind"]["status"] in ("ok", "not_found")
        else:
            assert enrichment["validation"]["is_bogon"] is True
            # never looked up anywhere: no maxmind block made, one already there left as it was
            assert enrichment.get("maxmind") == json.loads(text).get("maxmind")
