"""The notebooks under notebooks/ run top to bottom with their small defaults, and are committed clean.

Each notebook is executed by nbclient in a fresh ``python3`` kernel (jupyter_client starts it with
this interpreter, so the venv's packages are used) with notebooks/ as working directory, as
Jupyter would; a cell that raises fails the test with that cell's traceback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# figures each notebook must show inline (image/png outputs)
FIGURES = {
    "01_quickstart": 5,          # example images, two AUC matrices, average AUC, forgetting
    "02_your_own_data": 1,       # scored new images
    "03_avalanche_plugins": 1,   # AUC matrix + end-of-stream bars
    "04_inside_the_methods": 3,  # slow/fast weights, NAPA-VQ graph, EMA alpha
}
NOTEBOOKS = [NOTEBOOKS_DIR / f"{name}.ipynb" for name in FIGURES]
CELL_TIMEOUT_S = 300


def test_notebooks_folder_holds_exactly_the_listed_notebooks():
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(p.name for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs_and_with_small_defaults(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs; strip them with "
                       f"`jupyter nbconvert --clear-output --inplace {path}`")
    first_code = next(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert 'SCALE = "cpu-small"' in first_code, f"{path.name}: the first code cell must default to SCALE = \"cpu-small\""


WRITES_RUNS = {"01_quickstart", "02_your_own_data", "03_avalanche_plugins"}  # run folders, checkpoints


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' run folders land under tmp_path
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()  # raises CellExecutionError (with the cell and its traceback) on the first error

    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    figures = sum("image/png" in output.get("data", {}) for cell in code_cells for output in cell.outputs)
    assert figures == FIGURES[path.stem], f"{path.name} showed {figures} figures, expected {FIGURES[path.stem]}"
    if path.stem in WRITES_RUNS:
        assert any(tmp_path.iterdir()), "the notebook wrote nothing under its temporary folder"
