"""``medmulti demo`` end to end on a tiny cohort (one epoch, tiny CNNs).

The learning claims (the lower bound of the fusion model's 95% test AUC interval >= 0.85,
the fusion model with any two modalities above every single-modality model, minutes on 2
cores) are measured by benchmarks/demo_learning.py with the real defaults, not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from medmulti import cli
from medmulti.cli.demo import run_demo

TINY = {"width": 2, "depth": 2, "embed_dim": 4, "stem_stride": 2, "batch_size": 4}


def test_demo_writes_the_summary_and_the_comparison_table(tmp_path):
    lines: list[str] = []
    out = tmp_path / "demo"
    summary = run_demo(out, patients=12, epochs=1, seed=2, workers=1, progress=False, model_options=TINY,
                       echo=lines.append)
    on_disk = json.loads((out / "demo_summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert {"fusion", "ct", "mr", "xray", "seconds"} <= set(on_disk)
    for name in ("fusion", "ct", "mr", "xray"):
        entry = on_disk[name]
        assert 0.0 <= entry["test_accuracy"] <= 1.0
        assert entry["test_auc"] is None or 0.0 <= entry["test_auc"] <= 1.0
        assert (out / "runs" / name / "model.keras").is_file()
    cards = {n: json.loads((out / "runs" / n / "run_card.json").read_text()) for n in ("fusion", "ct")}
    assert cards["fusion"]["counts"]["test"] == cards["ct"]["counts"]["test"]  # same split for every model
    assert cards["ct"]["modalities"] == ["ct"]
    assert (out / "validation.html").is_file()
    table = [line for line in lines if line.strip().startswith(("fusion ", "ct ", "mr ", "xray "))]
    assert len(table) == 4
    subsets = on_disk["fusion"]["subsets"]  # the fusion model with modalities masked out, every subset
    assert list(subsets) == ["ct+mr+xray", "ct+mr", "ct+xray", "mr+xray", "ct", "mr", "xray"]
    assert (out / "runs" / "fusion" / "subsets_test.json").is_file()
    ci = on_disk["fusion"]["test_auc_ci"]  # the full set's interval, as subsets_test.json has it
    full = json.loads((out / "runs" / "fusion" / "subsets_test.json").read_text())["subsets"]["ct+mr+xray"]
    assert ci == full["auc_ci"] and (ci is None or ci[0] <= full["auc"] <= ci[1])
    assert sum(line.strip().startswith("{") for line in lines) == 7  # the printed subset table
    assert any("demo_summary.json" in line for line in lines)


def test_demo_files_only_prints_the_bundled_files_table(capsys):
    assert cli.main(["demo", "--files-only"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["source", "modality"]
    assert len(out) == 11 and not any(" error " in line for line in out)


def test_demo_files_only_as_a_command_prints_no_native_errors(tmp_path):
    # a fresh process in an empty folder, as `medmulti demo --files-only` runs; ITK used to print
    # "** ERROR: nifti_convert_nhdr2nim: bad dim[0]" to file descriptor 2 for the NIfTI-2 file
    exe = Path(sys.executable).parent / "medmulti"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([str(exe), "demo", "--files-only"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert len(rows) == 11 and any(row.startswith("NIfTI-2") for row in rows)
    assert "ERROR" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []  # reads the bundled files only, writes nothing
