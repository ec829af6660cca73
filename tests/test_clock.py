"""One clock for a whole run (`RefreshConfig.clock`): which blocks are stale, each block's
cached_at, each row's update time and the run log all read the same time."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from tests.sims import running

KEY = "clock-test-key"
T = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)


def test_a_run_at_an_injected_time(sample_world: tuple[Path, Path], tmp_path: Path) -> None:
    source, maxmind = sample_world
    path = tmp_path / "h.sqlite"
    shutil.copy(source, path)
    with (
        running("cymru", tmp_path / "cy.jsonl", "--seed", "3") as cy,
        running("greynoise", tmp_path / "gn.jsonl", "--seed", "3", "--key", KEY) as gn,
    ):

        def at(moment: datetime) -> int:
            config = RefreshConfig(
                db_url=f"sqlite:///{path}", maxmind_dir=maxmind, cymru=cy.address,
                greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=1000,
                clock=lambda: moment,
            )  # fmt: skip
            return refresh(config, LineReporter(verbosity=-1)).selected

        first = at(T)
        assert first > 150  # 2031: every block of the sample is stale
        con = sqlite3.connect(path)
        rows = [
            (json.loads(text), str(updated)[:19])
            for text, updated in con.execute(
                "SELECT enrichment, enrichment_updated_at FROM ip_inventory"
            )
        ]
        refreshed = [(blocks, updated) for blocks, updated in rows if "maxmind" in blocks
                     and blocks["maxmind"].get("cached_at") == T.isoformat()]  # fmt: skip
        assert len(refreshed) > 150
        cached = {
            blocks[source]["cached_at"]
            for blocks, _ in refreshed
            for source in ("cymru", "greynoise")
            if source in blocks
        }
        assert cached == {T.isoformat()}
        assert {updated for _, updated in refreshed} == {"2031-01-01 12:00:00"}
        asns = con.execute(
            "SELECT enrichment, enrichment_updated_at, updated_at FROM asn_inventory "
            "WHERE enrichment LIKE '%cymru%'"
        ).fetchall()
        assert len(asns) > 10  # Tier 1: AS names looked up in the same run
        assert {json.loads(text)["cymru"]["cached_at"] for text, _, _ in asns} == {T.isoformat()}
        assert {str(v)[:19] for _, *stamps in asns for v in stamps} == {"2031-01-01 12:00:00"}
        started = con.execute("SELECT started_at FROM etl_run_log").fetchall()
        assert [str(value)[:19] for (value,) in started] == ["2031-01-01 12:00:00"]
        con.close()
        assert at(T + timedelta(hours=1)) == 0  # all fresh an hour later
        # MaxMind and GreyNoise stale after 7 days: every row refreshed (bogons now known as such)
        assert at(T + timedelta(days=8)) == len(refreshed)
