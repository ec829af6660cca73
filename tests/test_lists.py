"""``honeypot-etl lists update`` and ``honeypot-etl lists`` (SPEC 3.4, issue 27 item 1) against
the lists simulator (``python -m testbed.sim.lists``, real HTTP): conditional requests, atomic
replacement, a failed download keeping the old file, exit 1 only for a list missing after."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import requests

from etl.cli.app import main
from etl.sources.classification.fetch import ListUrls, update_lists
from etl.sources.classification.lists import kind_problem, list_files, read_lists
from testbed.sim.lists.server import url_options
from tests.sims import Simulator, running

LISTS = [item.name for item in list_files()]


def urls(sim: Simulator) -> list[str]:
    """The options that point every list at ``sim``."""
    return url_options(sim.url)


def update(
    folder: Path, sim: Simulator, capsys: pytest.CaptureFixture[str], *more: str
) -> tuple[int, dict[str, str], str]:
    """``honeypot-etl lists update``: exit status, each list's line, all it printed."""
    code = main(["lists", "update", "--lists-dir", str(folder), *urls(sim), *more])
    out, err = capsys.readouterr()
    lines = {line.split(":", 1)[0]: line for line in out.splitlines()}
    return code, lines, out + err


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_first_update_fetches_every_list_and_a_second_asks_conditionally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    with running("lists", tmp_path / "l.jsonl", "--small") as sim:
        code, lines, out = update(folder, sim, capsys)
        assert code == 0, out
        assert all(lines[name].startswith(f"{name}: new") for name in LISTS), out
        before = digests(folder)
        code, lines, out = update(folder, sim, capsys)
        log = sim.entries()
    assert code == 0, out
    assert all(lines[name] == f"{name}: unchanged (not modified)" for name in LISTS), out
    assert digests(folder) == {**before, **{k: v for k, v in digests(folder).items()
                                            if k.endswith(".record.json")}}  # fmt: skip
    second = log[len(LISTS) :]
    assert len(second) == len(LISTS) and all(
        e["conditional"] and e["status"] == 304 for e in second
    )
    record = json.loads((folder / "tor.record.json").read_text())
    assert record["url"].endswith("/torbulkexitlist") and record["etag"]
    assert record["sha256"] == hashlib.sha256((folder / "tor.txt").read_bytes()).hexdigest()
    lists = read_lists(folder)
    assert not lists.missing and lists.ranges.height > 0 and lists.tor.height > 0
    assert main(["lists", "--lists-dir", str(folder), *urls(sim)]) == 0
    shown = capsys.readouterr().out
    assert "tor " in shown and "missing" not in shown and "/torbulkexitlist" in shown


def test_a_changed_list_is_replaced_and_gets_a_new_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    with running("lists", tmp_path / "l.jsonl", "--small", "--fault", "changed",
                 "--fault-list", "tor") as sim:  # fmt: skip
        update(folder, sim, capsys)
        first = read_lists(folder).versions
        code, lines, out = update(folder, sim, capsys)
    assert code == 0, out
    assert lines["tor"].startswith("tor: new"), out
    second = read_lists(folder).versions
    assert first["tor"] != second["tor"]
    assert {k: v for k, v in first.items() if k != "tor"} == {
        k: v for k, v in second.items() if k != "tor"
    }


@pytest.mark.parametrize("fault", ["404", "truncated", "html"])
def test_a_failed_download_keeps_the_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    folder = tmp_path / "lists"
    with running("lists", tmp_path / "good.jsonl", "--small") as good:
        assert update(folder, good, capsys)[0] == 0
    before = digests(folder)
    with running("lists", tmp_path / "bad.jsonl", "--small", "--fault", fault,
                 "--fault-list", "datacenters") as bad:  # fmt: skip
        code, lines, out = update(folder, bad, capsys)
    assert code == 0, out  # every list is still there
    assert lines["datacenters"].startswith("datacenters: failed (")
    assert lines["datacenters"].endswith("; the old file is kept)"), lines["datacenters"]
    assert digests(folder)["datacenters.csv"] == before["datacenters.csv"]
    assert "Traceback" not in out
    why = {"404": "HTTP 404", "truncated": "the download was cut short",
           "html": "not a list of its kind: an HTML page, not a list"}[fault]  # fmt: skip
    assert lines["datacenters"] == f"datacenters: failed ({why}; the old file is kept)"


def test_a_list_missing_after_the_update_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    with running("lists", tmp_path / "l.jsonl", "--small", "--fault", "404",
                 "--fault-list", "cloud-aws") as sim:  # fmt: skip
        code, lines, out = update(folder, sim, capsys, "--datacenters-url", "")
    assert code == 1, out
    assert lines["cloud-aws-v4"] == "cloud-aws-v4: failed (HTTP 404; no file yet)"
    assert lines["datacenters"] == "datacenters: off (its URL is empty)"
    assert "error: 2 list(s) missing in" in out and "cloud-aws-v4, cloud-aws-v6" in out
    assert not (folder / "datacenters.csv").exists()


def test_a_slow_list_times_out_and_the_others_are_fetched(tmp_path: Path) -> None:
    folder = tmp_path / "lists"
    with (
        running("lists", tmp_path / "l.jsonl", "--small", "--fault", "slow", "--fault-list",
                "tor", "--slow-seconds", "3") as sim,
        requests.Session() as session,
    ):  # fmt: skip
        base = sim.url
        fetched = update_lists(
            folder,
            ListUrls(
                tor=f"{base}/torbulkexitlist",
                cloud=f"{base}/cloud",
                aws=f"{base}/ip-ranges.json",
                gcp=f"{base}/cloud.json",
                datacenters=f"{base}/datacenters.csv",
            ),
            session,
            timeout=0.5,
        )
    outcome = {item.name: item for item in fetched}
    assert outcome["tor"].line() == "tor: failed (no answer within 0.5 s; no file yet)"
    assert all(item.outcome == "new" for name, item in outcome.items() if name != "tor")


def test_a_list_copied_in_by_hand_is_read_and_shown_without_a_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "tor.txt").write_text("1.2.3.4\n")
    assert main(["lists", "--lists-dir", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "no record: copied in by hand?" in shown and "missing" in shown
    assert read_lists(folder).tor["ip"].to_list() == ["1.2.3.4"]


def test_lists_are_readable_by_the_users_that_refresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written under the process's umask, as any new file (a cron refresh may run as another
    user than the one that fetched the lists): not owner-only, as a temporary file is."""
    folder = tmp_path / "lists"
    previous = os.umask(0o022)
    try:
        with running("lists", tmp_path / "l.jsonl", "--small") as sim:
            code, _, out = update(folder, sim, capsys)
    finally:
        os.umask(previous)
    assert code == 0, out
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("url", ["notaurl", "ftp://host/list.txt", "file:///etc/passwd"])
def test_a_list_url_that_is_no_http_url_is_exit_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lists", "update", "--lists-dir", str(tmp_path), "--tor-url", url])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --tor-url ") and "no http:// or https://" in err
    assert not list(tmp_path.iterdir())  # nothing fetched


def test_a_lists_folder_named_that_does_not_exist_is_a_typo_not_no_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lists` (and a refresh, status, doctor) refuse it; `lists update` makes it."""
    typo = tmp_path / "lsits"
    assert main(["lists", "--lists-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lists-dir ") and "no such folder (a typo?" in err


def test_a_lists_folder_in_a_folder_that_does_not_exist_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lists", "update", "--lists-dir", str(tmp_path / "no" / "lists")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --lists-dir ") and "does not exist" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("cloud-oracle-v6", b"# oracle ranges\n", None),  # empty, as a provider without IPv6
        ("cloud-aws-v4", b"3.0.0.0/15\n3.5.0.", "entry 2 is not a network: '3.5.0.'"),
        ("tor", b"<html><body>busy</body></html>", "an HTML page, not a list"),
        ("aws-ranges", b'{"prefixes": [', "not JSON (cut short?)"),
        ("aws-ranges", b"[]", "JSON without a list of prefixes"),
        ("gcp-ranges", b'{"prefixes": []}', None),
        ("datacenters", b"a,b\n1,2\n", "no cidr,vendor header"),
    ],
)
def test_what_reads_as_a_list_of_its_kind(name: str, data: bytes, problem: str | None) -> None:
    item = {i.name: i for i in list_files()}[name]
    assert kind_problem(item, data) == problem


def test_junk_in_the_lists_folder_is_read_as_no_entries(tmp_path: Path) -> None:
    (tmp_path / "aws-ranges.json").write_text('{"prefixes": 5, "ipv6_prefixes": [3, {"x": 1}]}')
    (tmp_path / "gcp-ranges.json").write_text("[]")
    (tmp_path / "datacenters.csv").write_text("cidr,vendor\n" + "x" * 200_000 + ",y\n")
    bad = '{"prefixes": [{"ipv4Prefix": "8.8.8.0/24", "scope": 5, "service": ["x"]}]}'
    (tmp_path / "gcp-ranges.json").write_text(bad)
    lists = read_lists(tmp_path)
    assert lists.ranges.select("network", "region", "service").rows() == [
        ("8.8.8.0/24", None, None)
    ]


def test_a_lists_folder_that_is_a_file_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "lists").write_text("not a folder")
    code = main(["lists", "update", "--lists-dir", str(tmp_path / "lists"), "--tor-url", ""])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --lists-dir ") and "is a file" in err


def test_status_shows_each_lists_age_and_the_old_ones(
    sample_world: tuple[Path, Path], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from etl.refresh.config import RefreshConfig
    from etl.status.collect import status_report
    from etl.status.text import render
    from testbed.sample.lists import SMALL, write_lists

    db, maxmind = sample_world
    folder = tmp_path / "lists"
    write_lists(folder, sizes=SMALL)
    (folder / "gcp-ranges.json").unlink()
    tor = (folder / "tor.txt").read_bytes()
    three_days = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    (folder / "tor.record.json").write_text(json.dumps(
        {"sha256": hashlib.sha256(tor).hexdigest(), "checked_at": three_days}
    ))  # fmt: skip
    config = RefreshConfig(db_url=f"sqlite:///{db}", maxmind_dir=maxmind, lists_dir=folder)
    report = status_report(config)
    ages = {item.name: item for item in report.lists}
    assert ages["tor"].old and ages["tor"].age_days == 3.0 and ages["tor"].entries == SMALL.tor
    assert not ages["datacenters"].old and report.lists_missing == ["gcp-ranges"]
    line = next(line for line in render(report).splitlines() if line.startswith("lists: "))
    assert line == (
        f"lists: 15 in {folder}, the oldest tor (3 days); OLD: tor (3 days); missing: gcp-ranges"
    )


def test_a_file_lists_update_did_not_write_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lists"
    folder.mkdir()
    mine = folder / "tor.txt"
    mine.write_text("an operator's own file\n")
    with running("lists", tmp_path / "l.jsonl", "--small") as sim:
        code, lines, out = update(folder, sim, capsys)
    assert code == 0, out
    assert lines["tor"] == (
        "tor: kept (not fetched by lists update (no record beside it): left as it is)"
    )
    assert mine.read_text() == "an operator's own file\n"
    assert not (folder / "tor.record.json").exists()
    assert lines["datacenters"].startswith("datacenters: new")
