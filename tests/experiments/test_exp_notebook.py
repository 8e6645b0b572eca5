"""notebooks/analysis.ipynb: committed without outputs; runs on a tiny run (slow)."""

import nbformat
import pytest

from exp_helpers import ROOT, tiny_wandb_run

NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None
    assert "MSRCNN_RUN_DIR" in code[0].source


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_run(tmp_path_factory, shapes_dir, monkeypatch):
    from nbclient import NotebookClient

    run_dir = tiny_wandb_run(tmp_path_factory, shapes_dir)
    monkeypatch.setenv("MSRCNN_RUN_DIR", str(run_dir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    pngs = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(pngs) == 4  # Figure 2, Figure 5, the best and the worst masks
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert str(run_dir) in text and "mask, MS R-CNN" in text
