"""Every tutorial notebook runs top to bottom without an error.

Each notebook is executed with nbclient in its own temporary working folder (the
notebooks write their generated data relative to the working folder), with the
kernel of the running interpreter. The notebooks are committed without outputs;
a test keeps it that way so the repository never holds stale results.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = [
    "01_read_and_window.ipynb",
    "02_validate_a_manifest.ipynb",
    "03_train_a_fusion_model.ipynb",
    "04_bring_your_own_data.ipynb",
]
# Identifying values in the headers of pydicom's bundled files the notebooks read
# (PatientName, PatientID, InstitutionName, the UID root of the series).
PHI_VALUES = ["CompressedSamples", "Doe^", "Archibald", "Peter", "JFK IMAGING", "1CT1", "98890234",
              "1.3.6.1.4.1.5962."]
# Per-cell limit: a hung cell fails the test instead of the whole suite hanging.
CELL_TIMEOUT_S = 300


def test_the_four_tutorials_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


def test_notebooks_match_their_sources():
    """Each notebook is built from ``tutorials/_src/<name>.py`` (python tutorials/_build.py)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(TUTORIALS / "_build.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not stale, f"{path.name}: cells {stale} hold outputs; strip them (python tutorials/_build.py)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    before = sorted(p.name for p in TUTORIALS.iterdir())
    # A small, predictable run: no GPU search, quiet TensorFlow, no progress bars
    # cluttering the outputs, few threads (the suite shares 2 cores).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("MEDMULTI_TUTORIAL_TEST", "1")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.setenv("TUTORIALS_DIR", str(TUTORIALS))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # show the failing cell's traceback, not nbclient's
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    # every plot cell produced a picture
    images = sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    )
    assert images >= 1, f"{path.name} produced no inline figure"
    # No identifying header value reached an output: the bundled files the notebooks
    # read carry patient names, IDs, an institution and UIDs (PHI in real data).
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) + str(o.get("evalue", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    leaked = [v for v in PHI_VALUES if v.lower() in text.lower()]
    assert not leaked, f"{path.name} printed header values {leaked}"
    # the notebook wrote only into its working folder, not into the checkout
    assert sorted(p.name for p in TUTORIALS.iterdir()) == before, "a notebook wrote into tutorials/"
