"""`medmulti evaluate --calibrate --bootstrap` on a one-epoch run of a tiny generated cohort, in
its own process: the evaluation JSON gains intervals, an operating point and calibration, the
run folder gains calibration.json and the reliability diagram, and predict applies the
temperature (probabilities change, decisions do not)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import medmulti as mm
from medmulti.errors import RunFolderError
from medmulti.training import evaluate, predict


def _probabilities(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["patient_id"] for r in rows], np.array([[float(r["p_healthy"]), float(r["p_disease"])] for r in rows])


def _within(value, ci):
    return ci is not None and ci[0] - 1e-12 <= value <= ci[1] + 1e-12


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_report")
    cohort = mm.make_sample_cohort(root / "c", n_patients=12, seed=3, faults=False, progress=False)
    result = mm.train(cohort.manifest, cohort.spec, root / "run", epochs=1, batch_size=4, width=2, depth=2,
                      embed_dim=4, stem_stride=2, cache_dir=root / "cache", progress=False)
    return root, cohort, result.run_dir


def test_evaluate_calibrate_bootstrap_writes_the_report_and_predict_applies_it(run):
    root, cohort, run_dir = run
    raw = predict(run_dir, cohort.manifest, out=root / "raw.csv", progress=False)
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", "evaluate", str(run_dir), "--calibrate",
                           "--bootstrap", "200", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "AUC " in proc.stdout and "operating point disease" in proc.stdout and "ECE" in proc.stdout
    assert "temperature-scaled" in proc.stdout

    record = json.loads((run_dir / "evaluation_test.json").read_text())
    for key in ("n", "auc", "auc_per_class", "accuracy", "confusion_matrix", "class_counts"):  # today's keys
        assert key in record
    assert record["bootstrap"]["n_resamples"] == 200 and record["bootstrap"]["unit"] == "patient"
    assert _within(record["auc"], record["auc_ci"]) and _within(record["accuracy"], record["accuracy_ci"])
    assert _within(record["brier"], record["brier_ci"])
    assert 0 <= record["ece"] <= 1 and record["calibration"]["ece_bins"] == 10
    assert record["calibrated"] is True and record["calibration"]["temperature"] > 0
    point = record["operating_point"]
    assert point["method"] == "youden" and point["chosen_on"] == "val" and list(point["classes"]) == ["disease"]
    op = point["classes"]["disease"]
    assert np.sum(op["confusion_matrix"]) == record["n"]
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        assert op[key] is None or _within(op[key], op[f"{key}_ci"]), key
    assert (run_dir / "calibration_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((run_dir / "calibration.json").read_text())
    assert stored["temperature"] == pytest.approx(record["calibration"]["temperature"])

    calibrated = predict(run_dir, cohort.manifest, out=root / "calibrated.csv", progress=False)
    ids_raw, p_raw = _probabilities(raw)
    ids_cal, p_cal = _probabilities(calibrated)
    assert ids_raw == ids_cal
    assert not np.allclose(p_raw, p_cal, atol=1e-4)
    np.testing.assert_array_equal(p_raw.argmax(1), p_cal.argmax(1))
    np.testing.assert_allclose(p_cal.sum(1), 1.0, atol=1e-5)
    _, p_off = _probabilities(predict(run_dir, cohort.manifest, out=root / "off.csv", progress=False,
                                      calibration=False))
    np.testing.assert_allclose(p_off, p_raw, atol=1e-6)

    # a later evaluate applies the stored temperature; a target sensitivity moves the operating point's rule
    again = evaluate(run_dir, split="val", bootstrap=0, target_sensitivity=1.0, write=False, progress=False)
    assert again["calibrated"] and again["auc_ci"] is None
    assert again["operating_point"]["method"] == "target_sensitivity"
    assert again["operating_point"]["classes"]["disease"]["sensitivity"] == 1.0  # chosen on the same split


def test_a_stale_or_malformed_calibration_is_a_typed_error(run, tmp_path):
    import shutil

    root, cohort, run_dir = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "calibration.json").write_text(json.dumps({"method": "temperature", "temperature": 2.0,
                                                       "model_sha256": "0" * 64}))
    with pytest.raises(RunFolderError, match="another model"):
        predict(copy, cohort.manifest, out=tmp_path / "p.csv", progress=False)
    (copy / "calibration.json").write_text("{")
    with pytest.raises(RunFolderError, match="not a valid temperature"):
        evaluate(copy, cohort.manifest, write=False, progress=False)
    with pytest.raises(ValueError, match="target_sensitivity"):
        evaluate(copy, cohort.manifest, target_sensitivity=1.5, progress=False)
