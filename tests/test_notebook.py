"""The Colab notebook installs nothing inside a checkout and runs a tiny R1-Zero end to end."""
import json
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_colab_notebook_runs(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(REPO / "notebooks" / "r1_zero_colab.ipynb", as_version=4)
  monkeypatch.setenv("R1JAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("R1JAX_NOTEBOOK_STEPS", "2")
  monkeypatch.setenv("R1JAX_NOTEBOOK_PRETRAIN", "20")
  monkeypatch.setenv("R1JAX_NOTEBOOK_SMALL", "1")
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["train_steps"] == 2 and 0 <= summary["final_accuracy"] <= 1
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert images, "the plots cell displayed no image"
