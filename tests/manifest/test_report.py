"""Problem records and the report: stable JSON keys, summary counts, HTML."""

from __future__ import annotations

import json
import re

import pytest

from medmulti.manifest.report import PROBLEM_KEYS, Problem, ValidationReport


def _problems():
    return [
        Problem("p2", "ct", "p2/ct", "series_geometry", "error", "a slice is missing", "export again"),
        Problem("p1", None, None, "unknown_label", "error", "line 2: label 'x'", "fix it"),
        Problem(None, None, None, "tiny_split", "warning", "split 'test' has only 1 patient(s)", "noisy"),
        Problem("p1", "mr", "p1/mr.nii.gz", "anisotropic_spacing", "warning", "voxel sizes differ", ""),
    ]


def test_json_keys_are_stable(tmp_path):
    report = ValidationReport(problems=_problems(), patients=["p1", "p2", "p3"])
    out = report.to_json(tmp_path / "sub" / "problems.json")
    records = json.loads(out.read_text())
    assert isinstance(records, list) and len(records) == 4
    for rec in records:
        assert list(rec) == ["patient_id", "modality", "path", "check", "severity", "message", "hint"]
        assert rec["severity"] in ("error", "warning")
    assert PROBLEM_KEYS == ("patient_id", "modality", "path", "check", "severity", "message", "hint")
    # errors first, then by patient
    assert [r["check"] for r in records[:2]] == ["unknown_label", "series_geometry"]
    again = ValidationReport.from_records(records, patients=report.patients)
    assert again.problems == report.problems


def test_ok_and_summary_counts():
    report = ValidationReport(problems=_problems(), patients=["p1", "p2", "p3"], n_files=7)
    assert not report.ok
    assert report.patients_with_errors() == ["p1", "p2"]
    text = report.summary()
    assert "patients: 3  ok: 1  with errors: 2" in text
    assert re.search(r"^series_geometry +error +1 +1$", text, re.M)
    assert re.search(r"^tiny_split +warning +1 +0$", text, re.M)
    assert report.by_check() == {"anisotropic_spacing": 1, "series_geometry": 1, "tiny_split": 1,
                                 "unknown_label": 1}
    lines = report.lines()
    assert lines[1].split("  ") == ["p2", "ct", "p2/ct", "series_geometry", "a slice is missing -> export again"]
    warnings_only = ValidationReport(problems=[p for p in _problems() if not p.is_error], patients=["p1"])
    assert warnings_only.ok and "result: OK, 2 warning(s)" in warnings_only.summary()


def test_html_has_table_and_thumbnails(tmp_path):
    report = ValidationReport(problems=_problems(), patients=["p1", "p2"], thumbnails={"p1": "iVBORw0KGgo="})
    text = report.to_html(tmp_path / "r.html").read_text()
    assert text.count("<tr class='error'>") == 2 and text.count("<tr class='warning'>") == 2
    assert "data:image/png;base64,iVBORw0KGgo=" in text
    assert "line 2: label &#x27;x&#x27;" in text  # escaped


def test_bad_severity_refused():
    with pytest.raises(ValueError):
        Problem("p", None, None, "x", "fatal", "m")


def test_every_check_is_registered_and_documented():
    import ast
    from pathlib import Path

    from medmulti.manifest.checks import CHECKS, ERROR_CHECKS

    pkg = Path(__file__).resolve().parents[2] / "medmulti" / "manifest"
    used = {check for check, _ in ERROR_CHECKS.values()}
    for f in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
                args = list(node.args)
                if len(args) >= 5 and isinstance(args[3], ast.Constant):
                    used.add(args[3].value)
                    assert CHECKS[args[3].value] == args[4].value, args[3].value
    # these two are built in a loop over (digest kind, check, hint) in cross_row_checks;
    # read_error is what Problem.from_error records for an exception that is not a MedmultiError
    assert used | {"same_study_two_patients", "duplicate_image", "read_error"} == set(CHECKS)
    docs = (pkg.parents[1] / "docs" / "manifest.md").read_text()
    for name in CHECKS:
        assert f"`{name}`" in docs, name
