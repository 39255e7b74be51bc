"""The walkthrough notebook runs top to bottom (fewer training steps than a reader's)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "seemore_from_scratch.ipynb"


@pytest.mark.timeout(300)
def test_the_walkthrough_notebook_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    setup = notebook.cells[1]
    assert "STEPS = 300" in setup.source
    setup.source = setup.source.replace("STEPS = 300", "STEPS = 30")
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(out.get("text", "") for cell in notebook.cells
                      for out in cell.get("outputs", []))
    assert "cached step equals the full pass: True" in outputs
    assert " right" in outputs and (tmp_path / "attention.png").is_file()
