"""The run report (``report.html``), ``medmulti evaluate --subsets`` and the evaluation of a
cross-validation run, on one-epoch runs of a tiny generated cohort whose manifest names a
patient ``SYN<script>alert(1)``."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

import medmulti as mm
from medmulti.training import evaluate
from medmulti.training.report import REPORT_FILE, write_run_report
from medmulti.training.run_folder import CV_SUMMARY

HOSTILE = "SYN<script>alert(1)"
TINY = dict(epochs=1, batch_size=4, width=2, depth=2, embed_dim=4, stem_stride=2, progress=False)


class _Links(HTMLParser):
    """Every src/href of a page, and whether it parsed into balanced sections."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [(name, value or "") for name, value in attrs if name in ("src", "href")]


def _parse(text):
    parser = _Links()
    parser.feed(text)
    parser.close()
    return parser


def _offline(parser):
    for name, value in parser.links:
        if name == "src":
            assert value.startswith("data:image/png;base64,"), value[:80]
        else:
            assert value.startswith("#"), value


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_report")
    c = mm.make_sample_cohort(root / "c", n_patients=12, seed=3, faults=False, progress=False)
    text = c.manifest.read_text()
    assert "SYN0003,test" in text
    c.manifest.write_text(text.replace("SYN0003,test", f"{HOSTILE},test", 1))
    return root, c


@pytest.fixture(scope="module")
def run_dir(cohort):
    root, c = cohort
    return mm.train(c.manifest, c.spec, root / "run", cache_dir=root / "cache", **TINY).run_dir


def test_evaluate_subsets_writes_an_offline_report_with_everything(cohort, run_dir):
    root, c = cohort
    mm.explain(run_dir, HOSTILE, out=run_dir / "explain")  # inside the run folder: reported
    mm.explain(run_dir, "SYN0011", out=root / "elsewhere")  # outside: not looked for
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", "evaluate", str(run_dir), "--subsets",
                           "--bootstrap", "100", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "AUC " in out and "modalities missing" in out and "{ct, mr}" in out and "ROC AUC [95% interval]" in out
    assert f"report: {run_dir / REPORT_FILE}" in out

    subsets = json.loads((run_dir / "subsets_test.json").read_text())
    assert list(subsets["subsets"])[0] == "ct+mr+xray" and len(subsets["subsets"]) == 7
    assert subsets["subsets"]["ct+mr"]["auc_ci"] is None or len(subsets["subsets"]["ct+mr"]["auc_ci"]) == 2
    assert (run_dir / "subsets_test.png").read_bytes()[:4] == b"\x89PNG"

    page = (run_dir / REPORT_FILE).read_text(encoding="utf-8")
    parser = _parse(page)
    _offline(parser)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    record = json.loads((run_dir / "evaluation_test.json").read_text())
    auc = "n/a" if record["auc"] is None else f"{record['auc']:.3f}"
    assert f"<td class=\"n\">{auc}</td>" in page or f"<td>{auc}</td>" in page
    for anchor in ("run", "training", "evaluation-test", "subsets-test", "explanations"):
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page
    assert "{ct, mr}" in page and "Brier score" in page and "TN / FP / FN / TP" in page
    assert sum(1 for name, _ in parser.links if name == "src") >= 6  # curves, ROC, reliability, subsets, 3 Grad-CAM
    assert "SYN&lt;script&gt;alert(1)" in page  # the explained patient's key, escaped
    assert "SYN0011" not in page  # the explanation written outside the run folder


def test_the_report_escapes_and_refuses_what_a_hostile_folder_holds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"SECRET" * 10)
    (run / "curves.png").symlink_to(secret)  # a link out of the run folder is not read
    (run / "confusion_roc_test.png").write_bytes(b"<svg onload=alert(1)>")  # not a PNG
    bad = '<img src=x onerror=alert(1)>'
    (run / "run_card.json").write_text(json.dumps({
        "model": "m\x1b[2J", "modalities": [bad], "spec": {"labels": {"classes": ["a", bad]}},
        "options": {bad: bad}, "counts": {"train": {"patients": 3, "classes": {bad: 1}}},
        "excluded": {"train": {"skipped": [{"patient_id": "<script>x", "modality": "ct", "reason": bad}]}}}))
    (run / "evaluation_test.json").write_text(json.dumps({
        "n": "<b>", "auc": bad, "auc_per_class": {bad: 0.5, "b": 0.6, "c": 0.7}, "accuracy": 0.5,
        "operating_point": {"method": "youden", "chosen_on": bad, "classes": {bad: {"threshold": bad}}},
        "calibration": {"ece_per_class": {bad: 0.1}}}))
    (run / "metrics.json").write_text("{not json")
    page = write_run_report(run).read_text(encoding="utf-8")
    parser = _parse(page)
    _offline(parser)
    assert not [name for name, _ in parser.links if name == "src"]
    assert "<img" not in page and "<script" not in page and "<b>" not in page and "\x1b" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;x" in page and "m\\x1b[2J" in page
    assert "SECRET" not in page and "U0VDUkVU" not in page
    assert "not a PNG file" in page
    assert {"html", "head", "body", "table", "section"} <= set(parser.tags)


def test_a_cross_validation_run_evaluates_per_fold_with_numpys_mean_and_sd(cohort):
    root, c = cohort
    cv = mm.train(c.manifest, c.spec, root / "cv", cache_dir=root / "cache", cv=2, **TINY).run_dir
    summary = json.loads((cv / CV_SUMMARY).read_text())
    result = evaluate(cv, bootstrap=50, progress=False)
    assert result["split"] == "test" and result["cv"] == 2 and result["std_ddof"] == 1
    assert [f["run_dir"] for f in result["folds"]] == ["fold-0", "fold-1"]
    for key in ("accuracy", "auc", "brier", "ece"):
        values = [f[key] for f in result["folds"]]
        if any(v is None for v in values):
            assert key not in result["mean"]
            continue
        assert result["mean"][key] == pytest.approx(np.mean(values))
        assert result["std"][key] == pytest.approx(np.std(values, ddof=1))
    written = json.loads((cv / "cv_evaluation_test.json").read_text())
    assert written["folds"] == json.loads(json.dumps(result["folds"]))
    for k in range(2):
        assert (cv / f"fold-{k}" / "evaluation_test.json").is_file() and (cv / f"fold-{k}" / REPORT_FILE).is_file()
        # a fold's val is its held-out fold (cv_summary's assignment), as at training, not the CSV's split column
        val = evaluate(cv / f"fold-{k}", split="val", bootstrap=0, write=False, progress=False)
        at_training = summary["folds"][k]["val"]
        held_out = [key for key, fold in summary["assignment"].items() if fold == k]
        assert val["n"] == at_training["n"] == len(held_out)
        assert val["accuracy"] == pytest.approx(at_training["accuracy"], abs=1e-6)
        if at_training["auc"] is not None:
            assert val["auc"] == pytest.approx(at_training["auc"], abs=1e-6)
    page = (cv / REPORT_FILE).read_text(encoding="utf-8")
    _offline(_parse(page))
    assert 'id="cv"' in page and "Evaluated on test" in page and "mean ± SD" in page
    mean_auc = result["mean"].get("auc")
    if mean_auc is not None:
        assert f"{mean_auc:.3f} ± {result['std']['auc']:.3f}" in page
