"""notebooks/explore.ipynb runs top to bottom, from the repository root and from notebooks/,
on a database with a week of runs behind it, and draws each of its plots.

The figures of the run from the root are kept in build/notebook-figures/ (CI leaves them there
to be looked at).
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

from etl.refresh.config import RefreshConfig
from etl.refresh.pipeline import refresh
from etl.report.summary import LineReporter
from etl.status import explore
from testbed.sample.build import build_sample
from testbed.sample.lists import world_lists
from testbed.sample.world import World
from tests.conftest import ROOT
from tests.sims import running

NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"
FIGURES = ROOT / "build" / "notebook-figures"
PLOTS = ("coverage", "forecast", "errors", "runs", "top_asns", "countries", "network_types",
         "greynoise")  # fmt: skip
KEY = "notebook-test-key"
# When each run was, before now: five days apart, then one 7 minutes after the last.
RUNS_AGO = (*(timedelta(days=days) for days in (9, 7, 5, 3, 1)), timedelta(hours=23, minutes=53))
RUN_LABEL = re.compile(r"^\d\d-\d\d \d\d:\d\d$")  # month-day hour:minute


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A 1,500-IP sample database refreshed 350 IPs at a time on five of the last nine days
    (twice on the last, 7 minutes apart), by services that fail now and then (Cymru garbles
    some sessions, GreyNoise sends some malformed answers): (its URL, its MaxMind folder)."""
    folder = tmp_path_factory.mktemp("week")
    url = f"sqlite:///{folder / 'honeypot.sqlite'}"
    build_sample(url, 1500, 7, folder / "maxmind")
    world_lists(World(7), folder / "lists")  # the labels, for the network types' plot
    faults = ("--fault-rate", "0.1")
    with (
        running("cymru", folder / "cy.jsonl", "--seed", "7", "--fault", "garble", *faults) as cy,
        running("greynoise", folder / "gn.jsonl", "--seed", "7", "--key", KEY,
                "--fault", "malformed", *faults) as gn,
    ):  # fmt: skip
        for ago in RUNS_AGO:
            moment = datetime.now(UTC) - ago
            config = RefreshConfig(
                db_url=url, maxmind_dir=folder / "maxmind", max_ips=350, cymru=cy.address,
                greynoise_url=gn.url, greynoise_api_key=KEY, greynoise_rate=1000,
                lists_dir=folder / "lists",
                clock=lambda moment=moment: moment,
            )  # fmt: skip
            refresh(config, LineReporter(verbosity=-1))
    return url, folder / "maxmind"


def execute(
    folder: Path,
    url: str | None,
    maxmind: Path | None,
    plots: Path,
    monkeypatch: pytest.MonkeyPatch,
    after: dict[str, str] | None = None,
) -> str:
    """Run the notebook with its working folder ``folder`` (``url``, ``maxmind``: its
    ETL_DB_URL and MAXMIND_DIR, None for neither); return the text it printed. ``after``: code
    run after the cell that draws a plot (name -> code), in that cell's variables."""
    monkeypatch.delenv("ETL_CONFIG", raising=False)
    for variable, value in (("ETL_DB_URL", url), ("MAXMIND_DIR", maxmind)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, str(value))
    monkeypatch.setenv("EXPLORE_PLOT_DIR", str(plots))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for name, code in (after or {}).items():
        index = next(i for i, c in enumerate(notebook.cells) if f'show(fig, "{name}")' in c.source)
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(code))
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors
    return "".join(o.get("text", "") for o in outputs)


def test_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_each_plot_has_its_question_and_reads_no_sql() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    # the numbers come from etl: no SQL, no DuckDB of its own
    assert not re.search(r"\b(SELECT|FROM|JOIN|WHERE)\s", code)
    assert ".duck" not in code and "execute(" not in code and "sqlite3" not in code
    for name in PLOTS:
        index = next(i for i, c in enumerate(notebook.cells) if f'"{name}")' in c.source)
        question = notebook.cells[index - 1]
        assert question.cell_type == "markdown" and "?" in question.source.splitlines()[0]


def test_notebook_runs_from_the_root_and_from_notebooks(
    week: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, maxmind = week
    snapshot = explore.load_snapshot(RefreshConfig(db_url=url, maxmind_dir=maxmind))
    assert snapshot.runs.height == len(RUNS_AGO)
    reasons = explore.errors_by_reason(snapshot.ips)["reason"]  # the errors plot has bars
    assert reasons.len() > 0 and (reasons != explore.NO_REASON).all(), reasons.to_list()
    shutil.rmtree(FIGURES, ignore_errors=True)
    drawn = ("print('RUN TICKS', [t.get_text() for t in axes[-1].get_xticklabels()]);"
             "print('RUN XS', [[int(x) for x in line.get_xdata()] for line in axes[0].lines])")  # fmt: skip
    text = execute(ROOT, url, maxmind, FIGURES, monkeypatch, after={"runs": drawn})
    assert f"opened {url} (read-only)" in text
    assert f"{snapshot.ips.height:,} IPs in ip_inventory" in text
    assert f"runs in the run log: {len(RUNS_AGO)}" in text
    # One tick per run (six of them), each with its day; the two runs 7 minutes apart apart.
    ticks = explore.run_ticks(explore.runs_over_time(snapshot.runs))["label"].to_list()
    assert f"RUN TICKS {ticks}" in text and len(ticks) == len(RUNS_AGO), text
    assert all(RUN_LABEL.match(tick) for tick in ticks) and len(set(ticks)) == len(ticks)
    assert f"RUN XS {[list(range(len(RUNS_AGO)))]}" in text
    for name in PLOTS:
        image = matplotlib.image.imread(FIGURES / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 400, name
        assert image.std() > 0.01, name  # something was drawn
        # and it is data: bars and lines are coloured, empty axes only black on white
        rgb = image[..., :3]
        coloured = (rgb.max(axis=2) - rgb.min(axis=2) > 0.2).mean()
        assert coloured > 0.005, (name, coloured)
    text = execute(ROOT / "notebooks", url, maxmind, tmp_path / "plots", monkeypatch)
    assert f"opened {url} (read-only)" in text
    assert sorted(p.stem for p in (tmp_path / "plots").iterdir()) == sorted(PLOTS)


def test_the_default_database_is_found_from_either_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ETL_DB_URL the notebook names data/demo/honeypot.sqlite of the repository,
    wherever it was started (only the first cell runs: the demo may not exist)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in notebook.cells if c.cell_type == "code")
    first.source += "\nprint('DB_URL', DB_URL)"
    monkeypatch.delenv("ETL_DB_URL", raising=False)
    for folder in (ROOT, ROOT / "notebooks"):
        ran = nbformat.from_dict(nbformat.v4.new_notebook(cells=[first]))
        NotebookClient(ran, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()  # fmt: skip
        text = "".join(o.get("text", "") for o in ran.cells[0].outputs)
        assert f"DB_URL sqlite:///{ROOT / 'data' / 'demo' / 'honeypot.sqlite'}" in text


@pytest.mark.parametrize("where", ["outside the repository", "before make demo"])
def test_without_a_database_one_line_says_what_to_set(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened in a folder outside the repository (no ETL_DB_URL: the demo's path there), or in
    the repository with a database that is not there yet: one line that says to set
    ETL_DB_URL, no traceback, and every other cell does nothing (no plot)."""
    outside = where == "outside the repository"
    folder = tmp_path if outside else ROOT
    missing = None if outside else f"sqlite:///{tmp_path / 'not-yet.sqlite'}"
    text = execute(folder, missing, None, tmp_path / "plots", monkeypatch)
    lines = text.splitlines()
    assert len(lines) == 1 and "Set ETL_DB_URL (or db in etl.toml)" in lines[0], text
    # the database it looked for: the demo's of the folder it was opened in, or ETL_DB_URL's
    named = tmp_path / ("data/demo/honeypot.sqlite" if outside else "not-yet.sqlite")
    assert lines[0].startswith("nothing to show: db_url ") and str(named) in lines[0]
    assert "Traceback" not in text
    assert not (tmp_path / "plots").exists()
