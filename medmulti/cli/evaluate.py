"""Score a trained run (a ``medmulti train`` folder) on a split of a manifest.

Writes ``evaluation_<split>.json`` (metrics with 95% patient-bootstrap intervals, the
operating point chosen on the validation split, Brier score and ECE),
``predictions_<split>.csv``, ``confusion_roc_<split>.png`` and ``calibration_<split>.png``
into RUN_DIR, and with ``--calibrate`` the run's ``calibration.json`` (a temperature fitted
on the validation split, applied by later ``evaluate`` and ``predict`` calls), and
refreshes RUN_DIR/report.html (every result of the folder on one offline page). Prints AUC
and accuracy with intervals, the operating point, the calibration and where the report is.
``--subsets`` also scores every non-empty subset of the run's modalities (the absent ones
masked out) and prints their table. A cross-validation run folder (``train --cv K``) is
scored fold by fold: each fold's line and the mean ± SD (sample SD) over the folds, written
to RUN_DIR/cv_evaluation_<split>.json.
Exit codes: 0 scored, 1 data problem, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..text import printable
from .arguments import add_run_data_arguments, non_negative_int
from .output import format_subsets

HELP = "score a trained run on a manifest split (exit 0 scored, 1 data problem, 2 usage error)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` arguments.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand parser.
    """
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `medmulti train`")
    parser.add_argument("--manifest", metavar="MANIFEST", default=None,
                        help="manifest CSV (default: the one the run was trained on)")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test", help="split (default test)")
    parser.add_argument("--bootstrap", metavar="N", type=non_negative_int, default=2000,
                        help="bootstrap replicates of the 95%% intervals, resampling patients (default 2000; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--target-sensitivity", metavar="S", type=_fraction, default=None,
                        help="operating point: the most specific threshold reaching sensitivity S on the "
                             "validation split (default: Youden's J)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit a temperature on the validation split and store it in RUN_DIR "
                             "(calibration.json; applied by later evaluate and predict calls)")
    parser.add_argument("--subsets", action="store_true",
                        help="also score every non-empty subset of the run's modalities, the absent ones masked "
                             "out (subsets_<split>.json and .png), and print the table")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--no-write", action="store_true",
                        help="write nothing into RUN_DIR (score a read-only or shared run folder)")
    add_run_data_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments.

    Returns
    -------
    int
        0 scored, 1 data problem (raised as MedmultiError).
    """
    from pathlib import Path

    from ..training import evaluate
    from ..training.report import REPORT_FILE
    from ..training.subsets import evaluate_subsets

    common = dict(split=args.split, cache_dir=args.cache, data_root=args.data_root, on_missing=args.on_missing,
                  on_corrupt=args.on_corrupt, write=not args.no_write, progress=not args.no_progress, seed=args.seed)
    metrics = evaluate(args.run_dir, args.manifest, bootstrap=args.bootstrap,
                       target_sensitivity=args.target_sensitivity, calibrate=args.calibrate, **common)
    cv = "folds" in metrics and "cv" in metrics
    runs = [Path(args.run_dir) / f["run_dir"] for f in metrics["folds"]] if cv else [Path(args.run_dir)]
    subsets = ([evaluate_subsets(r, args.manifest, n_resamples=args.bootstrap, **common) for r in runs]
               if args.subsets else [])
    if args.json:
        print(json.dumps(metrics if not args.subsets else {"evaluation": metrics, "subsets": subsets}, indent=2))
        return 0
    for line in cv_summary_lines(args.split, metrics) if cv else summary_lines(args.split, metrics):
        print(line)
    for run_dir, result in zip(runs, subsets):
        where = f" ({printable(run_dir.name)})" if cv else ""
        print(f"modalities missing{where}: {printable(result['note'])}")
        for line in format_subsets(result):
            print("  " + line)
    if not args.no_write:
        print(f"report: {printable(Path(args.run_dir) / REPORT_FILE)}")
    return 0


def cv_summary_lines(split: str, result: dict[str, Any]) -> list[str]:
    """What ``medmulti evaluate`` prints for a cross-validation run folder.

    Parameters
    ----------
    split : str
        The evaluated split.
    result : dict
        As :func:`medmulti.training.evaluate` returns it for a cross-validation run.

    Returns
    -------
    list of str
        One line per fold (AUC and accuracy with their intervals, n), then the mean
        ± sample SD over the folds of AUC, accuracy, Brier score and ECE.
    """
    lines = [f"{printable(split)}, {result['cv']} folds:"]
    for f in result["folds"]:
        lines.append(f"  fold {f['fold']}: AUC {_with_ci(f.get('auc'), f.get('auc_ci'))}, accuracy "
                     f"{_with_ci(f.get('accuracy'), f.get('accuracy_ci'))} (n={f.get('n')})")
    mean, std = result.get("mean") or {}, result.get("std") or {}
    spread = [f"{label} {mean[key]:.3f} ± {std.get(key, float('nan')):.3f}" for key, label in
              (("auc", "AUC"), ("accuracy", "accuracy"), ("brier", "Brier"), ("ece", "ECE")) if key in mean]
    lines.append("  mean ± SD (ddof=1): " + (", ".join(spread) if spread else "n/a"))
    return lines


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _with_ci(value: float | None, ci: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text if not ci else f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def summary_lines(split: str, metrics: dict[str, Any]) -> list[str]:
    """The readable summary ``medmulti evaluate`` prints.

    Parameters
    ----------
    split : str
        The evaluated split.
    metrics : dict
        As returned by :func:`medmulti.training.evaluate`.

    Returns
    -------
    list of str
        AUC and accuracy with their intervals (``AUC 0.910 [0.860, 0.950]``), per-class
        AUCs for more than two classes, one operating-point line per class, the
        confusion matrix, and Brier score / ECE. Class names are escaped
        (:func:`medmulti.text.printable`).
    """
    boot = metrics.get("bootstrap") or {}
    resamples = boot.get("n_resamples") or 0
    interval = f", 95% intervals from {resamples} bootstrap resamples of patients" if resamples else ""
    lines = [f"{printable(split)}: AUC {_with_ci(metrics.get('auc'), metrics.get('auc_ci'))}, accuracy "
             f"{_with_ci(metrics.get('accuracy'), metrics.get('accuracy_ci'))} (n={metrics['n']}{interval})"]
    per_class = metrics.get("auc_per_class") or {}
    if len(per_class) > 2:
        ci = metrics.get("auc_per_class_ci") or {}
        lines.append("  AUC per class (one-vs-rest): " + ", ".join(
            f"{printable(c)} {_with_ci(a, ci.get(c))}" for c, a in per_class.items()))
    point = metrics.get("operating_point")
    if point is None:
        lines.append("operating point: none (no validation split)")
    else:
        how = ("Youden's J" if point["method"] == "youden"
               else f"sensitivity >= {point['target_sensitivity']:g}")
        for name, m in point["classes"].items():
            if m is None:
                lines.append(f"operating point {printable(name)}: none (one class only in the validation split)")
                continue
            lines.append(
                f"operating point {printable(name)} (p >= {m['threshold']:.3f}, {how} on val): "
                + ", ".join(f"{label} {_with_ci(m[key], m.get(key + '_ci'), 2)}" for key, label in
                            (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"),
                             ("npv", "NPV")))
                + f"; [[TN, FP], [FN, TP]] = {m['confusion_matrix']}")
    if "brier" in metrics:
        cal = metrics.get("calibration") or {}
        state = (f"temperature-scaled, T = {cal['temperature']:.3f} fitted on {printable(cal.get('fitted_on'))}"
                 if metrics.get("calibrated") else "uncalibrated")
        before = (f"; before scaling Brier {cal['brier_uncalibrated']:.3f}, ECE {cal['ece_uncalibrated']:.3f}"
                  if "brier_uncalibrated" in cal else "")
        lines.append(f"calibration ({state}): Brier {_with_ci(metrics['brier'], metrics.get('brier_ci'))}, "
                     f"ECE {metrics['ece']:.3f} ({cal.get('ece_bins', 10)} bins){before}")
    lines.append(f"confusion matrix {metrics['confusion_matrix']}")
    return lines
