"""notebooks/explore.ipynb runs top to bottom against the demo database and draws its plots."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.image
import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"
PLOTS = ("coverage", "staleness", "top_asns", "countries", "greynoise")


def test_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_and_plots(
    demo: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = demo
    plots = tmp_path / "plots"
    monkeypatch.setenv("ETL_DB_URL", f"sqlite:///{folder / 'honeypot.sqlite'}")
    monkeypatch.setenv("EXPLORE_PLOT_DIR", str(plots))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    for name in PLOTS:
        image = matplotlib.image.imread(plots / f"{name}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0.01, name  # something was drawn
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "opened sqlite:///" in text and "600 IPs" in text
