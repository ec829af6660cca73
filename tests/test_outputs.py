"""What users and monitors see: configuration precedence, status file, metrics, progress, secrets."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from etl.report.metrics import exact, render_metrics, render_state_metrics, write_metrics
from etl.report.progress import StatusFile
from etl.report.summary import RunSummary
from etl.report.terminal import RichProgress
from tests.sims import run_module, running

KEY = "planted-greynoise-key-5f3a9c"
PASSWORD = "planted-db-password-7e21"
PROM_LINE = re.compile(r'^(# (HELP|TYPE) .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+)$')


# -- progress --------------------------------------------------------------------------------


def test_progress_bars_show_counts_rate_and_notes() -> None:
    out = io.StringIO()
    bars = RichProgress(Console(file=out, force_terminal=True, width=120), secrets=(KEY,))
    bars.phase_started("greynoise", 200)
    bars.advanced("greynoise", 50)
    bars.note(f"GreyNoise refused the key {KEY}")
    bars.phase_finished("greynoise", 1.0)
    bars.close()
    text = out.getvalue()
    # Stopped by the refused key at 50 of 200: the bar says so, it is not filled up.
    assert "greynoise" in text and "50/200" in text and "200/200" not in text
    assert "GreyNoise refused the key ***" in text and KEY not in text


def test_status_file_is_atomic_and_complete(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path, secrets=(KEY,), interval=0.05)
    summary = RunSummary()
    status.attach(summary)
    status.phase_started("greynoise", 100)
    status.advanced("greynoise", 40)
    summary.sources["greynoise"].ok = 40
    time.sleep(0.2)
    running_state = json.loads(path.read_text())
    assert running_state["state"] == "running" and running_state["phase"] == "greynoise"
    assert (running_state["done"], running_state["total"]) == (40, 100)
    assert running_state["rate"] > 0 and running_state["eta_seconds"] is not None
    assert running_state["sources"]["greynoise"]["ok"] == 40
    status.note(f"stopped: key {KEY} refused")
    status.phase_finished("greynoise", 1.0)
    status.close()
    final = json.loads(path.read_text())
    assert final["state"] == "finished" and final["phases"]["greynoise"]["state"] == "done"
    assert KEY not in path.read_text()
    assert not list(tmp_path.glob(".*tmp"))


# -- metrics ---------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_and_keep_the_last_success(tmp_path: Path) -> None:
    summary = RunSummary(selected=10, upserted=10)
    summary.phase_seconds = {"select": 0.5, "greynoise": 3.25}
    summary.sources["cymru"].ok = 4
    path = tmp_path / "etl.prom"
    write_metrics(path, summary, success=True)
    text = path.read_text()
    assert all(PROM_LINE.match(line) for line in text.splitlines()), text
    assert 'honeypot_etl_phase_seconds{phase="greynoise"} 3.25' in text
    assert 'honeypot_etl_source_ips{source="cymru",status="ok"} 4' in text
    success = re.search(r"^honeypot_etl_last_success_timestamp_seconds (\S+)$", text, re.M)
    assert success
    write_metrics(path, RunSummary(), success=False)
    failed = path.read_text()
    assert "honeypot_etl_last_run_success 0" in failed
    assert f"honeypot_etl_last_success_timestamp_seconds {success.group(1)}" in failed
    fresh = render_metrics(RunSummary(), False, 1.0, None)
    assert "last_success_timestamp_seconds" not in fresh


def test_metric_values_are_exact_as_a_prometheus_parser_reads_them(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    summary = RunSummary(selected=1_234_567, upserted=1_234_567)
    summary.sources["greynoise"].ok = 9_876_543
    summary.maxmind_build_epochs = {"asn": 1_796_131_336}
    path = tmp_path / "etl.prom"
    before = time.time()
    write_metrics(path, summary, success=True)
    after = time.time()
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }
    ran = values[("honeypot_etl_last_run_timestamp_seconds", ())]
    assert before <= ran <= after  # to the microsecond: never rounded to 6 digits
    assert values[("honeypot_etl_last_success_timestamp_seconds", ())] == ran
    assert values[("honeypot_etl_selected_ips", ())] == 1_234_567
    assert values[("honeypot_etl_source_ips", (("source", "greynoise"), ("status", "ok")))] == (
        9_876_543
    )
    assert values[("honeypot_etl_maxmind_build_timestamp_seconds", (("database", "asn"),))] == (
        1_796_131_336
    )
    assert "e+" not in path.read_text()


def test_the_readmes_alerts_use_series_and_labels_the_metrics_file_has(tmp_path: Path) -> None:
    """Each alert of the README's example reads a series a metrics file writes (the run's, or
    the state's), and each ``$labels.X`` of its annotations is a label of that series (not of
    another one)."""
    from prometheus_client.parser import text_string_to_metric_families

    from etl.report.summary import SourceStop

    summary = RunSummary()
    summary.stopped["greynoise"] = SourceStop("key_refused", "GreyNoise refused the key", 3)
    summary.list_ages, summary.lists_old = {"tor": 200_000.0}, ["tor"]
    path = tmp_path / "etl.prom"
    write_metrics(path, summary, success=True)
    state = render_state_metrics({"greynoise": 1}, "0.1.0", 1.0)  # status --metrics-file
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(path.read_text() + state):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("Prometheus alerts for the metrics file", 1)[1].split("```")[1]
    alerts = block.split("- alert:")[1:]
    assert alerts
    for alert in alerts:
        series = re.findall(r"\b(honeypot_etl_[a-z_]+)\b", alert.split("expr:", 1)[1])
        assert series and all(name in labels for name in series), alert
        expr_series = series[0]
        for used in re.findall(r"\$labels\.([a-z_]+)", alert):
            assert used in labels[expr_series], (alert, labels[expr_series])


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(0, 2**53))
def test_exact_reads_back_as_the_same_number(value: float) -> None:
    assert float(exact(value)) == value


# -- a whole run: status file while it goes, files at the end, and no secret anywhere ---------


def test_a_monitored_run_leaks_no_secret(tmp_path: Path, pg_url: str) -> None:
    db_url = pg_url.replace("postgres@", f"postgres:{PASSWORD}@")
    built = run_module(
        "testbed.sample", "--db", db_url, "--ips", "400", "--maxmind-dir", str(tmp_path)
    )
    assert built.returncode == 0, built.stderr
    status, summary, metrics = (tmp_path / n for n in ("status.json", "summary.json", "etl.prom"))
    with (
        running("greynoise", tmp_path / "g.jsonl", "--key", KEY, "--rate", "60") as gn,
        running("cymru", tmp_path / "c.jsonl", "--fault", "garbage") as cy,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "etl.refresh", "--db", db_url, "--maxmind-dir", str(tmp_path),
             "--cymru", cy.address, "--greynoise-url", gn.url, "--greynoise-rate", "60",
             "--status-file", str(status), "--summary-json", str(summary),
             "--metrics-file", str(metrics), "--verbose"],
            env={**os.environ, "GREYNOISE_API_KEY": KEY},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        seen: list[dict[str, Any]] = []
        while process.poll() is None:
            if status.exists():
                seen.append(json.loads(status.read_text()))  # always whole: atomic replace
            time.sleep(0.3)
        stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    stamps = [s["updated_at"] for s in seen if s["state"] == "running"]
    assert len(set(stamps)) >= 3  # rewritten while running
    assert any(s["phase"] == "greynoise" and s["rate"] > 0 for s in seen)
    assert json.loads(status.read_text())["state"] == "finished"
    assert "Cymru batch " in stderr and "greynoise:" in stderr
    outputs = {"stdout": stdout, "stderr": stderr}
    outputs |= {p.name: p.read_text() for p in (status, summary, metrics)}
    for name, text in outputs.items():
        assert KEY not in text, name
        assert PASSWORD not in text, name
    assert json.loads(summary.read_text())["sources"]["greynoise"]["queried"] > 0
