"""The notebooks run headless, top to bottom, on the synthetic set (each within about a minute)."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from conftest import REPO_ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ASGCN_NOTEBOOK_OUT", str(tmp_path))  # the kernel inherits these
    monkeypatch.setenv("ASGCN_DATA_DIR", str(data_dir))
    notebook = nbformat.read(path, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name} is committed with outputs; clear them"
    start = time.perf_counter()
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {}) or "image/gif" in output.get("data", {})]
    assert len(images) >= 4, f"{path.name} drew {len(images)} pictures"
    assert seconds < 120, f"{path.name} took {seconds:.0f} s; keep it around a minute"
