"""Searches a refresh spends (SPEC 3.3): an enterprise run checks every stale IP quickly and looks
up in full only what the quick check found, as the simulator bills it; the summary, its table
and the metrics report the Searches."""

from __future__ import annotations

import math
import re
from pathlib import Path

from etl.refresh.pipeline import refresh
from etl.report.metrics import render_metrics
from etl.report.summary import LineReporter, RunSummary
from testbed.sample.world import World
from tests.sims import running
from tests.test_refresh_greynoise import KEY, build_sample, config, greynoise_blocks

ROOT = Path(__file__).resolve().parent.parent
WORLD = World(1)


def test_an_enterprise_run_spends_a_search_per_thousand_quick_checks_and_per_ip_found(
    tmp_path: Path,
) -> None:
    db_url = build_sample(tmp_path, 3_000)
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY) as gn:
        summary = refresh(config(db_url, tmp_path, gn, greynoise_mode="enterprise"),
                          LineReporter(verbosity=-1))  # fmt: skip
        entries = gn.entries()
    quick = [e for e in entries if e["quick"]]
    full = [e for e in entries if not e["quick"]]
    asked = [ip for e in quick for ip in e["ips"]]
    found = [ip for ip in asked if WORLD.greynoise(ip) is not None]
    assert {e["status"] for e in entries} == {200} and len(asked) == len(set(asked)) > 2_000
    assert sorted(ip for e in full for ip in e["ips"]) == sorted(found)  # no one else in full
    spent = sum(e["searches"] for e in entries)
    assert spent <= sum(math.ceil(len(e["ips"]) / 1_000) for e in quick) + len(found)
    assert spent == math.ceil(len(asked) / 1_000) + len(found) < len(asked)  # naive: 1 per IP
    assert summary.greynoise_searches == spent
    assert summary.greynoise_requests == len(entries)
    greynoise = summary.sources["greynoise"]
    assert greynoise.queried == len(asked) and greynoise.ok == len(found)
    assert greynoise.not_found == len(asked) - len(found) and greynoise.error == 0
    blocks = greynoise_blocks(db_url)
    scanner = next(ip for ip in found if WORLD.greynoise(ip).noise and WORLD.greynoise(ip).tags)
    record = WORLD.greynoise(scanner)
    assert blocks[scanner]["tags"] == list(record.tags)
    assert blocks[scanner]["first_seen"] == f"{record.first_seen}T00:00:00+00:00"
    assert (blocks[scanner]["actor"], blocks[scanner]["spoofable"]) == (record.name,
                                                                        record.spoofable)  # fmt: skip
    unseen = next(ip for ip in asked if WORLD.greynoise(ip) is None)
    assert blocks[unseen]["status"] == "not_found" and blocks[unseen]["tags"] is None


def test_the_simulator_daily_limit_counts_searches_in_enterprise_mode(tmp_path: Path) -> None:
    db_url = build_sample(tmp_path, 600)
    with running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--daily-limit", "60") as gn:
        summary = refresh(config(db_url, tmp_path, gn, greynoise_mode="enterprise"),
                          LineReporter(verbosity=-1))  # fmt: skip
        entries = gn.entries()
    # The quick check (1 Search) fits; the full lookup of ~200 found IPs would pass 60: refused
    # whole with the daily-limit 429, and billed nothing.
    assert [(e["quick"], e["status"], e["searches"]) for e in entries] == [
        (True, 200, 1), (False, 429, 0)]  # fmt: skip
    assert summary.stopped["greynoise"].reason == "daily_limit"
    assert summary.greynoise_searches == 1
    greynoise = summary.sources["greynoise"]
    assert greynoise.ok == 0 and greynoise.not_found > 0  # what the quick check settled


def test_the_summary_table_json_and_metrics_report_searches() -> None:
    summary = RunSummary(greynoise_requests=6, greynoise_searches=929)
    assert "GreyNoise: 6 requests sent, 0 IPs answered, 929 Searches" in summary.table()
    assert summary.to_dict()["greynoise_searches"] == 929
    text = render_metrics(summary, True, 1_800_000_000.0, None)
    assert "\nhoneypot_etl_greynoise_searches 929\n" in text
    assert RunSummary().greynoise_searches == 0


def test_every_metrics_series_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    summary = RunSummary(maxmind_build_epochs={"asn": 1})
    series = set(re.findall(r"^# TYPE (\w+) gauge$", render_metrics(summary, True, 1.0, 1.0),
                            re.MULTILINE))  # fmt: skip
    assert series and not {name for name in series if f"`{name}" not in readme}
