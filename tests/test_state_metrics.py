"""``honeypot-etl status --metrics-file``: the state of the database as metrics, without a
refresh (the IPs due per source, exactly as ``status`` counts them; the installed version),
written atomically where the refresh's own rules allow an output, never over the refresh's
metrics file (nor the refresh over it)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etl.cli.status import main
from etl.core.errors import SettingError
from etl.core.vocabulary import SOURCES
from etl.refresh.config import RefreshConfig
from etl.refresh.outputs import check_outputs
from etl.refresh.pipeline import refresh
from etl.report.metrics import write_metrics
from etl.report.summary import LineReporter, RunSummary
from etl.status.collect import status_report
from testbed.sample.build import build_sample
from testbed.sample.lists import world_lists
from testbed.sample.world import World

PROM_LINE = re.compile(r'^(# (HELP|TYPE) .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \S+)$')


@pytest.fixture
def sample(tmp_path: Path) -> tuple[str, Path]:
    """A 300-IP sample database with IPs due for every source, the labels too (its lists in
    the default lists folder of ``tmp_path``, where `cli` runs): (its URL, its MaxMind
    folder)."""
    url = f"sqlite:///{tmp_path / 'honeypot.sqlite'}"
    build_sample(url, 300, 5, tmp_path / "maxmind")
    world_lists(World(5), tmp_path / "data" / "lists")
    return url, tmp_path / "maxmind"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.chdir(tmp_path)  # no ./etl.toml found by looking
    monkeypatch.delenv("ETL_DB_URL", raising=False)
    monkeypatch.delenv("ETL_CONFIG", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def due_of(path: Path) -> dict[str, float]:
    values = samples(path.read_text())
    return {source: values[("honeypot_etl_due_ips", (("source", source),))] for source in SOURCES}


def test_the_state_metrics_are_what_status_calls_due(
    cli: Any, sample: tuple[str, Path], tmp_path: Path
) -> None:
    url, maxmind = sample
    path = tmp_path / "textfile" / "honeypot_etl_state.prom"  # its folder is made
    base = ("--db", url, "--maxmind-dir", str(maxmind))
    before = time.time()
    assert cli(*base, "--metrics-file", str(path)) == (0, "", "")  # quiet: for cron
    text = path.read_text()
    assert all(PROM_LINE.match(line) for line in text.splitlines()), text
    report = status_report(RefreshConfig(db_url=url, maxmind_dir=maxmind))
    assert due_of(path) == {source: report.sources[source].due for source in SOURCES}
    assert all(due_of(path).values())  # the sample has IPs due for every source
    values = samples(text)
    assert values[("honeypot_etl_info", (("version", version("honeypot-etl")),))] == 1
    assert before - 1 <= values[("honeypot_etl_state_timestamp_seconds", ())] <= time.time()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial left

    # The state, not the last run: a MaxMind-only refresh makes MaxMind's count 0, and the
    # next status says so (over its own earlier file), as its JSON does.
    ran = RefreshConfig(db_url=url, maxmind_dir=maxmind, skip=frozenset({"cymru", "greynoise"}))
    refresh(ran, LineReporter(verbosity=-1))
    code, out, err = cli(*base, "--metrics-file", str(path), "--json")
    assert (code, err) == (0, "")
    due = due_of(path)
    assert due["maxmind"] == 0 < report.sources["maxmind"].due and due["greynoise"] > 0
    assert due == {source: data["due"] for source, data in json.loads(out)["sources"].items()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("target", "what"),
    [
        ("honeypot.sqlite", "is the database"),
        ("honeypot.sqlite-wal", "is the database's -wal file"),
        ("etl.toml", "is the config file"),
        ("maxmind/GeoLite2-City.mmdb", "is a MaxMind database"),
        ("run.prom", "is the refresh's metrics file"),
        ("notes.txt", "exists and is not an earlier state metrics file of honeypot-etl"),
        ("other-run.prom", "exists and is not an earlier state metrics file of honeypot-etl"),
    ],
)
def test_the_file_is_refused_where_the_refresh_refuses_an_output(
    cli: Any, sample: tuple[str, Path], tmp_path: Path, target: str, what: str
) -> None:
    url, _maxmind = sample
    config = tmp_path / "etl.toml"
    config.write_text(f'db = "{url}"\nmaxmind_dir = "maxmind"\nmetrics_file = "run.prom"\n')
    write_metrics(tmp_path / "run.prom", RunSummary(), success=True)
    write_metrics(tmp_path / "other-run.prom", RunSummary(), success=True)  # not named
    (tmp_path / "notes.txt").write_text("the operator's notes\n")
    path = tmp_path / target
    path.touch()
    before = digest(path)
    code, out, err = cli("--config", str(config), "--metrics-file", str(path))
    assert (code, out) == (2, "") and err.startswith(f"error: --metrics-file {path} {what}")
    assert err.count("\n") == 1 and digest(path) == before


def test_a_refresh_never_writes_over_the_state_metrics(
    cli: Any, sample: tuple[str, Path], tmp_path: Path
) -> None:
    url, maxmind = sample
    state = tmp_path / "state.prom"
    assert cli("--db", url, "--maxmind-dir", str(maxmind), "--metrics-file", str(state))[0] == 0
    with pytest.raises(SettingError, match="is not an earlier metrics file of honeypot-etl"):
        check_outputs(RefreshConfig(db_url=url, maxmind_dir=maxmind, metrics_file=state))
