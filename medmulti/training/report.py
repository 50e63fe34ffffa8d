"""The run report: one HTML page, ``report.html`` in the run folder, of what the folder holds.

:func:`write_run_report` reads a run folder (or a cross-validation run folder) and writes a
page a reviewer can open offline and pass on as one file: images are embedded as base64
``data:`` URIs, the style sheet is inline, there is no script and no link out of the page
(only ``#`` anchors). It shows what it finds and leaves the rest out:

- the run card: model, modalities, classes, options, patients per split and class, the
  patients left out or fed zeros (``run_card.json``);
- training: ``curves.png`` and the epochs of ``metrics.json``;
- per evaluated split (``evaluation_<split>.json``): the metrics with their 95% intervals,
  the operating point, calibration (Brier, ECE, ``calibration_<split>.png``) and
  ``confusion_roc_<split>.png``;
- missing-modality robustness (``subsets_<split>.json`` and ``.png``);
- explanations: every ``explain.json`` folder inside the run folder (explanations written
  elsewhere are not looked for) with its ``gradcam_<modality>.png``;
- cross-validation: ``cv_summary.json`` and ``cv_evaluation_<split>.json``.

Every file is read as untrusted data (a run folder may come from a colleague): JSON and
PNG files are size-capped, a file reached through a link out of the run folder is not
read, a malformed file is left out with a note, and every value shown is escaped
(:func:`html.escape` of :func:`medmulti.text.printable`). Patients appear by their manifest
key only; no header value is in any of these files.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .._version import __version__
from ..errors import RunFolderError
from ..text import printable
from .run_folder import CV_SUMMARY, MAX_CARD_BYTES, RUN_CARD, folder_error, write_text

__all__ = ["REPORT_FILE", "write_run_report"]

log = logging.getLogger("medmulti.training")

#: The report's file name in the run folder.
REPORT_FILE = "report.html"

#: A PNG larger than this is not embedded (a medmulti plot is well under 1 MB).
MAX_PNG_BYTES = 16 * 1024 * 1024

_SPLITS = ("test", "val", "train")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GRADCAM = re.compile(r"gradcam_[A-Za-z0-9_.+-]{1,100}\.png")
_EXPLAIN_FILE = "explain.json"
_MAX_EXPLAIN = 50
_MAX_DEPTH = 3
_SKIP_DIRS = ("backup", "tensorboard")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.note{color:#555;font-size:.9em}
nav ul{columns:2}
"""


# -- the page ------------------------------------------------------------------------------
def write_run_report(run_dir: str | PathLike[str]) -> Path:
    """Write ``report.html`` into a run folder, from whatever the folder holds.

    Parameters
    ----------
    run_dir : str or PathLike
        A folder written by :func:`~medmulti.training.train` (one run, or a
        cross-validation run with ``cv_summary.json``), evaluated or not.

    Returns
    -------
    Path
        The report written (``run_dir/report.html``), replacing an earlier one atomically.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a folder, or the report cannot be written.

    Notes
    -----
    :func:`~medmulti.training.evaluate` (``write=True``) and
    :func:`~medmulti.training.subsets.evaluate_subsets` (``write=True``) call it, so the
    report follows the folder; call it after :func:`~medmulti.training.explain.explain`
    to add an explanation written inside the run folder.

    Examples
    --------
    >>> import tempfile
    >>> path = write_run_report(tempfile.mkdtemp())
    >>> path.name, "<script" in path.read_text()
    ('report.html', False)
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunFolderError("the run folder does not exist", path=run,
                             hint="pass the folder `medmulti train` wrote (its out folder)")
    page = _page(run)
    path = run / REPORT_FILE
    try:
        write_text(path, page)
    except OSError as exc:
        raise folder_error(exc, run, "the report") from None
    return path


def _page(run: Path) -> str:
    card = _read_json(run, RUN_CARD)
    sections: list[tuple[str, str, str]] = []  # (anchor, title, body)
    if card is not None:
        sections.append(("run", "Run", _card_section(card)))
    training = _training_section(run)
    if training:
        sections.append(("training", "Training", training))
    for split in _SPLITS:
        record = _read_json(run, f"evaluation_{split}.json")
        if record is not None:
            sections.append((f"evaluation-{split}", f"Evaluation: {split}", _evaluation_section(run, split, record)))
    for split in _SPLITS:
        subsets = _read_json(run, f"subsets_{split}.json")
        if subsets is not None:
            sections.append((f"subsets-{split}", f"Missing modalities: {split}",
                             _subsets_section(run, split, subsets)))
    explanations = _explanations_section(run, cv=card is None)
    if explanations:
        sections.append(("explanations", "Explanations", explanations))
    summary = _read_json(run, CV_SUMMARY)
    if summary is not None:
        sections.append(("cv", "Cross-validation", _cv_section(run, summary)))
    title = "medmulti run report"
    if card is not None and card.get("model"):
        title += f": {printable(card['model'])}"
    elif summary is not None:
        title += f": cross-validation ({_text(summary.get('cv'))} folds)"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{_e(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{_e(title)}</h1>",
             f'<p class="note">Written by medmulti {_e(__version__)} on {_e(when)} from the files of the run '
             f"folder {_e(run.name)}. Patients are named by their manifest key only.</p>"]
    if sections:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t, _ in sections)
                     + "</ul></nav>")
    else:
        parts.append("<p>The folder holds nothing to report yet: train a model into it, then evaluate it.</p>")
    for anchor, title_, body in sections:
        parts.append(f'<section id="{anchor}"><h2>{_e(title_)}</h2>{body}</section>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# -- sections ------------------------------------------------------------------------------
def _card_section(card: Mapping[str, Any]) -> str:
    spec = card.get("spec") if isinstance(card.get("spec"), dict) else {}
    labels = spec.get("labels") if isinstance(spec.get("labels"), dict) else {}
    manifest = card.get("manifest") if isinstance(card.get("manifest"), dict) else {}
    rows: list[tuple[Any, Any]] = [
        ("model", card.get("model")),
        ("status", card.get("status")),
        ("modalities", _join(card.get("modalities"))),
        ("optional modalities", _join(card.get("optional_modalities")) or "none"),
        ("classes", _join(labels.get("classes"))),
        ("multi-label", labels.get("multi_label", False)),
        ("manifest sha256", manifest.get("sha256")),
        ("seed", card.get("seed")),
        ("deterministic", card.get("deterministic")),
        ("best epoch", card.get("best_epoch")),
        ("training seconds", card.get("seconds")),
    ]
    if isinstance(card.get("cv"), dict):
        fold = card["cv"]
        rows.append(("cross-validation", f"fold {_text(fold.get('fold'))} of {_text(fold.get('folds'))} "
                                         f"(fold source: {_text(fold.get('source'))})"))
    if "resumed_after_epoch" in card:
        rows.append(("resumed after epoch", card.get("resumed_after_epoch")))
    versions = card.get("versions")
    if isinstance(versions, dict):
        rows.append(("versions", ", ".join(f"{_text(k)} {_text(v)}" for k, v in versions.items())))
    out = [_table(("", ""), rows, heading=False)]
    options = card.get("options")
    if isinstance(options, dict) and options:
        out.append("<h3>Options</h3>" + _table(("option", "value"), [(k, _value(v)) for k, v in options.items()]))
    counts = card.get("counts")
    if isinstance(counts, dict) and counts:
        classes = [c for c in _list(labels.get("classes"))]
        rows2 = []
        for split, c in counts.items():
            c = c if isinstance(c, dict) else {}
            per_class = c.get("classes") if isinstance(c.get("classes"), dict) else {}
            rows2.append((split, c.get("patients"), *(per_class.get(k) for k in classes), c.get("skipped"),
                          c.get("zeroed_inputs")))
        out.append("<h3>Patients per split</h3>" + _table(("split", "patients", *classes, "skipped",
                                                            "inputs fed as zeros"), rows2))
    excluded = card.get("excluded")
    left: list[tuple[Any, ...]] = []
    if isinstance(excluded, dict):
        for split, found in excluded.items():
            found = found if isinstance(found, dict) else {}
            for what, verb in (("skipped", "skipped"), ("zeroed", "fed as zeros")):
                for rec in _list(found.get(what)):
                    if isinstance(rec, dict):
                        left.append((split, verb, rec.get("patient_id"), rec.get("modality") or "row",
                                     rec.get("reason")))
    out.append("<h3>Patients left out or fed zeros</h3>"
               + (_table(("split", "what", "patient", "modality", "reason"), left) if left else "<p>None.</p>"))
    return "\n".join(out)


def _training_section(run: Path) -> str:
    out = []
    metrics = _read_json(run, "metrics.json")
    if metrics is not None:
        rows = [("epochs run", metrics.get("epochs_run")), ("best epoch", metrics.get("best_epoch")),
                ("monitored", metrics.get("monitor"))]
        for split in ("val", "test"):
            m = metrics.get(split)
            if isinstance(m, dict) and m:
                rows.append((f"{split} ROC AUC at the best epoch", _number(m.get("auc"))))
                rows.append((f"{split} accuracy at the best epoch", _number(m.get("accuracy"))))
        out.append(_table(("", ""), rows, heading=False))
    out.append(_image(run, "curves.png", "training curves"))
    return "\n".join(x for x in out if x)


def _evaluation_section(run: Path, split: str, record: Mapping[str, Any]) -> str:
    boot = record.get("bootstrap") if isinstance(record.get("bootstrap"), dict) else {}
    resamples = boot.get("n_resamples") or 0
    rows: list[tuple[Any, ...]] = [("patients", record.get("n"), ""),
                                   ("ROC AUC", _number(record.get("auc")), _interval(record.get("auc_ci")))]
    per_class = record.get("auc_per_class") if isinstance(record.get("auc_per_class"), dict) else {}
    per_class_ci = record.get("auc_per_class_ci") if isinstance(record.get("auc_per_class_ci"), dict) else {}
    if len(per_class) > 2:
        rows += [(f"ROC AUC {_text(c)} (one-vs-rest)", _number(a), _interval(per_class_ci.get(c)))
                 for c, a in per_class.items()]
    rows += [("accuracy", _number(record.get("accuracy")), _interval(record.get("accuracy_ci"))),
             ("Brier score", _number(record.get("brier")), _interval(record.get("brier_ci"))),
             ("expected calibration error", _number(record.get("ece")), "")]
    note = (f"95% percentile intervals from {_text(resamples)} bootstrap resamples of patients (seed "
            f"{_text(boot.get('seed'))})." if resamples else "No bootstrap intervals (0 resamples).")
    out = [_table(("metric", "value", "95% interval"), rows), f'<p class="note">{_e(note)}</p>']
    matrix = record.get("confusion_matrix")
    if isinstance(matrix, list):
        out.append(f"<p>Confusion matrix (rows: true class, columns: predicted): {_e(_value(matrix))}</p>")
    out.append(_image(run, f"confusion_roc_{split}.png", f"confusion matrix and ROC curve, {split}"))
    out.append("<h3>Operating point</h3>" + _operating_point(record.get("operating_point")))
    out.append("<h3>Calibration</h3>" + _calibration(record))
    out.append(_image(run, f"calibration_{split}.png", f"reliability diagram, {split}"))
    return "\n".join(x for x in out if x)


def _operating_point(point: Any) -> str:
    if not isinstance(point, dict):
        return "<p>None: the manifest has no validation split to choose a threshold on.</p>"
    how = ("Youden's J" if point.get("method") == "youden"
           else f"the most specific threshold reaching sensitivity {_number(point.get('target_sensitivity'))}")
    rows = []
    classes = point.get("classes") if isinstance(point.get("classes"), dict) else {}
    for name, m in classes.items():
        if not isinstance(m, dict):
            rows.append((name, "none (one class only in the validation split)", "", "", "", "", ""))
            continue
        cm = m.get("confusion_matrix")
        flat = [x for r in cm for x in r] if isinstance(cm, list) and all(isinstance(r, list) for r in cm) else []
        rows.append((name, _number(m.get("threshold")),
                     *(f"{_number(m.get(k), 2)} {_interval(m.get(k + '_ci'), 2)}".strip()
                       for k in ("sensitivity", "specificity", "ppv", "npv")),
                     " / ".join(_text(x) for x in flat) if len(flat) == 4 else _value(cm)))
    return (f'<p class="note">Threshold chosen on the {_e(point.get("chosen_on"))} split by {_e(how)}; a patient '
            "is called positive when its probability is at least the threshold.</p>"
            + _table(("class", "threshold", "sensitivity", "specificity", "PPV", "NPV", "TN / FP / FN / TP"), rows))


def _calibration(record: Mapping[str, Any]) -> str:
    cal = record.get("calibration") if isinstance(record.get("calibration"), dict) else {}
    if record.get("calibrated"):
        state = (f"temperature-scaled: T = {_number(cal.get('temperature'))}, fitted on the "
                 f"{_text(cal.get('fitted_on'))} split")
    else:
        state = "uncalibrated (the model's probabilities)"
    rows: list[tuple[Any, ...]] = [("state", state),
                                   ("Brier score",
                                    f"{_number(record.get('brier'))} {_interval(record.get('brier_ci'))}".strip()),
                                   ("ECE", f"{_number(record.get('ece'))} ({_text(cal.get('ece_bins', 10))} "
                                           "equal-width bins)")]
    if "brier_uncalibrated" in cal:
        rows += [("Brier score before scaling", _number(cal.get("brier_uncalibrated"))),
                 ("ECE before scaling", _number(cal.get("ece_uncalibrated")))]
    per_class = cal.get("ece_per_class")
    if isinstance(per_class, dict) and per_class:
        rows.append(("ECE per class (one-vs-rest)", ", ".join(f"{_text(c)} {_number(v)}" for c, v in per_class.items())))
    return _table(("", ""), rows, heading=False)


def _subsets_section(run: Path, split: str, result: Mapping[str, Any]) -> str:
    subsets = result.get("subsets") if isinstance(result.get("subsets"), dict) else {}
    rows = []
    for name, r in subsets.items():
        r = r if isinstance(r, dict) else {}
        mods = r.get("modalities")
        rows.append(("{" + ", ".join(_text(m) for m in _list(mods)) + "}" if isinstance(mods, list) else name,
                     _number(r.get("auc")), _interval(r.get("auc_ci")), _number(r.get("accuracy")),
                     _interval(r.get("accuracy_ci")), r.get("n")))
    note = (f"Absent modalities masked ({_text(result.get('masking'))}): {_text(result.get('note'))}. "
            "Every subset is scored on the same patients.")
    return "\n".join(x for x in (
        _table(("modalities", "ROC AUC", "95% interval", "accuracy", "95% interval", "n"), rows),
        f'<p class="note">{_e(note)}</p>',
        _image(run, f"subsets_{split}.png", f"ROC AUC and accuracy per subset of modalities, {split}")) if x)


def _explanations_section(run: Path, *, cv: bool) -> str:
    out = []
    for folder in _explain_folders(run, cv=cv):
        doc = _read_json(run, str(folder.relative_to(run) / _EXPLAIN_FILE))
        if doc is None:
            continue
        where = folder.relative_to(run).as_posix()
        probs = doc.get("probabilities") if isinstance(doc.get("probabilities"), dict) else {}
        rows: list[tuple[Any, ...]] = [
            ("patient", doc.get("patient_id")), ("split", doc.get("split")),
            ("probabilities", ", ".join(f"{_text(c)} {_number(p)}" for c, p in probs.items())),
            ("predicted class", doc.get("predicted_class")), ("explained class", doc.get("target_class")),
            ("method", doc.get("method")), ("folder", where)]
        fusion = doc.get("fusion") if isinstance(doc.get("fusion"), dict) else {}
        weights = fusion.get("weights")
        rows.append(("fusion weights", f"{_text(fusion.get('method'))}: " + (
            ", ".join(f"{_text(m)} {_number(w)}" for m, w in weights.items()) if isinstance(weights, dict)
            else "none (the fusion has no weights per modality)")))
        part = [f"<h3>Patient {_e(doc.get('patient_id'))}</h3>", _table(("", ""), rows, heading=False)]
        modalities = doc.get("modalities") if isinstance(doc.get("modalities"), dict) else {}
        for name, entry in modalities.items():
            entry = entry if isinstance(entry, dict) else {}
            png = entry.get("png")
            caption = (f"{_text(name)}: Grad-CAM, layer {_text(entry.get('layer'))}, "
                       f"{'present' if entry.get('present') else 'absent'}, peak at {_value(entry.get('peak_index'))}")
            if isinstance(png, str) and _GRADCAM.fullmatch(png):
                part.append(f"<p>{_e(caption)}</p>" + _image(run, f"{where}/{png}", f"Grad-CAM {name}"))
            else:
                part.append(f"<p>{_e(caption)}; {_e(entry.get('note') or 'no heat map')}</p>")
        out.append("\n".join(part))
    return "\n".join(out)


def _explain_folders(run: Path, *, cv: bool) -> list[Path]:
    """Folders inside ``run`` holding an ``explain.json`` (links not followed; a cross-validation
    run's fold folders have their own reports)."""
    found: list[Path] = []
    for top, dirs, files in os.walk(run, followlinks=False):
        depth = len(Path(top).relative_to(run).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS and depth < _MAX_DEPTH
                         and not (cv and depth == 0 and re.fullmatch(r"fold-\d+", d)))
        if _EXPLAIN_FILE in files:
            found.append(Path(top))
            if len(found) >= _MAX_EXPLAIN:
                log.info("the report shows the first %d explanations of the run folder", _MAX_EXPLAIN)
                break
    return found


def _cv_section(run: Path, summary: Mapping[str, Any]) -> str:
    folds = [f for f in _list(summary.get("folds")) if isinstance(f, dict)]
    out = [f'<p class="note">{_e(_text(summary.get("cv")))} folds (fold source: '
           f"{_e(summary.get('fold_source'))}); each fold's run folder fold-k holds its own report.html. "
           "SD: sample standard deviation (ddof=1).</p>"]
    rows = []
    for f in folds:
        val = f.get("val") if isinstance(f.get("val"), dict) else {}
        test = f.get("test") if isinstance(f.get("test"), dict) else {}
        rows.append((f.get("fold"), f.get("best_epoch"), _number(val.get("auc")), _number(val.get("accuracy")),
                     _number(test.get("auc")), _number(test.get("accuracy"))))
    mean = summary.get("mean") if isinstance(summary.get("mean"), dict) else {}
    std = summary.get("std") if isinstance(summary.get("std"), dict) else {}
    rows.append(("mean ± SD", "", *(_mean_sd(mean.get(s), std.get(s), k) for s in ("val", "test")
                                    for k in ("auc", "accuracy"))))
    out.append("<h3>At training (held-out fold as val)</h3>"
               + _table(("fold", "best epoch", "val ROC AUC", "val accuracy", "test ROC AUC", "test accuracy"), rows))
    for split in _SPLITS:
        record = _read_json(run, f"cv_evaluation_{split}.json")
        if record is None:
            continue
        rows = [(f.get("fold"), f.get("n"), f"{_number(f.get('auc'))} {_interval(f.get('auc_ci'))}".strip(),
                 f"{_number(f.get('accuracy'))} {_interval(f.get('accuracy_ci'))}".strip(), _number(f.get("brier")),
                 _number(f.get("ece"))) for f in _list(record.get("folds")) if isinstance(f, dict)]
        rows.append(("mean ± SD", "", *(_mean_sd(record.get("mean"), record.get("std"), k)
                                        for k in ("auc", "accuracy", "brier", "ece"))))
        out.append(f"<h3>Evaluated on {_e(split)}</h3>"
                   + _table(("fold", "patients", "ROC AUC [95% interval]", "accuracy [95% interval]", "Brier", "ECE"),
                            rows))
    return "\n".join(out)


def _mean_sd(mean: Any, std: Any, key: str) -> str:
    if not isinstance(mean, dict) or key not in mean:
        return "n/a"
    return f"{_number(mean.get(key))} ± {_number(std.get(key) if isinstance(std, dict) else None)}"


# -- reading the folder --------------------------------------------------------------------
def _inside(run: Path, name: str) -> Path | None:
    """``run/name`` when it is a file whose real path lies inside the run folder."""
    path = run / name
    try:
        real, root = os.path.realpath(path), os.path.realpath(run)
        if os.path.commonpath([real, root]) != root or not os.path.isfile(real):
            return None
    except (OSError, ValueError):
        return None
    return path


def _read_json(run: Path, name: str) -> dict[str, Any] | None:
    path = _inside(run, name)
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise ValueError("too large")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log.warning("the report leaves out %s: not a readable JSON file", printable(name))
        return None
    return data if isinstance(data, dict) else None


def _image(run: Path, name: str, alt: str) -> str:
    path = _inside(run, name)
    if path is None:
        return ""
    try:
        if path.stat().st_size > MAX_PNG_BYTES:
            return f'<p class="note">{_e(name)}: larger than {MAX_PNG_BYTES >> 20} MB, not embedded.</p>'
        data = path.read_bytes()
    except OSError:
        return ""
    if not data.startswith(_PNG_MAGIC):
        return f'<p class="note">{_e(name)}: not a PNG file, not embedded.</p>'
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
            f"<figcaption class=\"note\">{_e(name)}</figcaption></figure>")


# -- formatting ----------------------------------------------------------------------------
def _e(value: Any) -> str:
    """A value from input as HTML text (and attribute value): control characters escaped, then markup."""
    return html.escape(printable(value), quote=True)


def _text(value: Any) -> str:
    return "n/a" if value is None else printable(value)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return printable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _interval(ci: Any, digits: int = 3) -> str:
    if isinstance(ci, list) and len(ci) == 2:
        return f"[{_number(ci[0], digits)}, {_number(ci[1], digits)}]"
    return ""


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else _text(value)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _join(value: Any) -> str:
    return ", ".join(_text(v) for v in _list(value))


def _table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, heading: bool = True) -> str:
    """An HTML table; every cell is escaped here, numbers right-aligned."""
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if heading else ""
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = _number(cell) if isinstance(cell, (int, float)) and not isinstance(cell, bool) else _text(cell)
            tag = "th" if i == 0 and not heading else "td"
            cls = ' class="n"' if tag == "td" and re.fullmatch(r"-?[\d.]+( ± -?[\d.]+)?", text) else ""
            cells.append(f"<{tag}{cls}>{_e(text)}</{tag}>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + head + "".join(body) + "</table>"
