"""The evaluation record: the metrics of a split with patient-bootstrap intervals, the
operating point chosen on the validation split, calibration, and the run folder's stored
temperature (``calibration.json``).

What :func:`~medmulti.training.evaluate` writes as ``evaluation_<split>.json``; the
numbers come from :mod:`medmulti.models.metrics` and :mod:`medmulti.models.calibration`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RunFolderError
from ..models.calibration import TemperatureScaling
from ..models.metrics import (
    THRESHOLD_METRICS,
    bootstrap_intervals,
    calibration_metrics,
    choose_threshold,
    classification_metrics,
    label_matrix,
    positive_classes,
    threshold_metrics,
)
from .run_folder import MODEL_FILE, sha256_file, write_json

__all__ = ["CALIBRATION_FILE", "evaluation_record", "read_calibration", "write_calibration"]

log = logging.getLogger("medmulti.training")

#: The run folder's fitted temperature, applied by evaluate and predict when present.
CALIBRATION_FILE = "calibration.json"

_MAX_CALIBRATION_BYTES = 1 << 20


def write_calibration(run: Path, scaling: TemperatureScaling) -> Path:
    """Store ``scaling`` as the run's ``calibration.json`` (atomically), bound to the
    sha256 of the model file it was fitted for."""
    path = run / CALIBRATION_FILE
    write_json(path, {"format": 1, **scaling.to_dict(), "model_sha256": sha256_file(run / MODEL_FILE)})
    return path


def read_calibration(run: Path) -> TemperatureScaling | None:
    """The run's stored temperature, or ``None`` when the run has none.

    Raises
    ------
    RunFolderError
        ``calibration.json`` is unreadable or malformed, or was fitted for another
        ``model.keras`` (the run was trained again over the folder since).
    """
    path = run / CALIBRATION_FILE
    if not path.is_file():
        return None
    hint = dict(hint="fit it again with evaluate(..., calibrate=True), or delete the file",
                cli_hint="fit it again with `medmulti evaluate RUN --calibrate`, or delete the file")
    try:
        if path.stat().st_size > _MAX_CALIBRATION_BYTES:
            raise RunFolderError("the calibration file is too large", path=path, **hint)
        data = json.loads(path.read_text(encoding="utf-8"))
        scaling = TemperatureScaling.from_dict(data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
        raise RunFolderError("the calibration file is not a valid temperature record", path=path, **hint) from None
    if data.get("model_sha256") != sha256_file(run / MODEL_FILE):
        raise RunFolderError("the calibration was fitted for another model (model.keras changed since)", path=path,
                             **hint)
    return scaling


def _operating_point(y: np.ndarray, p: np.ndarray, classes: Sequence[str], multi_label: bool,
                     val: tuple[np.ndarray, np.ndarray] | None, target_sensitivity: float | None,
                     chosen_on: str) -> dict[str, Any] | None:
    if val is None:
        return None
    y_val = label_matrix(val[0], len(classes), multi_label=multi_label)
    onehot = label_matrix(y, len(classes), multi_label=multi_label)
    per_class: dict[str, Any] = {}
    for i in positive_classes(classes, multi_label=multi_label):
        t = choose_threshold(y_val[:, i], val[1][:, i], target_sensitivity=target_sensitivity)
        per_class[classes[i]] = None if t is None else threshold_metrics(onehot[:, i], p[:, i], t)
    return {"method": "youden" if target_sensitivity is None else "target_sensitivity",
            "target_sensitivity": target_sensitivity, "chosen_on": chosen_on,
            "one_vs_rest": len(per_class) > 1, "classes": per_class}


def evaluation_record(
    y_true: Any,
    probabilities: Any,
    classes: Sequence[str],
    *,
    multi_label: bool = False,
    val: tuple[Any, Any] | None = None,
    target_sensitivity: float | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    calibration: TemperatureScaling | None = None,
    uncalibrated: Any = None,
) -> dict[str, Any]:
    """Metrics of one split with intervals, operating point and calibration.

    Parameters
    ----------
    y_true : array_like
        Labels of the evaluated split (class indices, one-hot or multi-hot).
    probabilities : array_like, shape (n, k)
        Its probabilities (calibrated when ``calibration`` is given).
    classes : sequence of str
    multi_label : bool
    val : (labels, probabilities), optional
        The validation split, scaled as ``probabilities``; the operating point's
        threshold is chosen there. ``None``: no operating point.
    target_sensitivity : float, optional
        Choose the threshold reaching this sensitivity on validation (default Youden's J).
    n_resamples : int
        Bootstrap replicates (0: no intervals, every ``*_ci`` is ``None``).
    seed : int
        Bootstrap seed.
    calibration : TemperatureScaling, optional
        The temperature that scaled ``probabilities`` (recorded).
    uncalibrated : array_like, optional
        The model's raw probabilities on the split, to record Brier and ECE before scaling.

    Returns
    -------
    dict
        :func:`~medmulti.models.metrics.classification_metrics`' keys, plus ``auc_ci``,
        ``auc_per_class_ci``, ``accuracy_ci``, ``brier``, ``brier_ci``, ``ece``,
        ``calibrated``, ``calibration`` (``temperature``, ``ece_per_class``, ``ece_bins``,
        ``curves``, and ``brier_uncalibrated``/``ece_uncalibrated`` when scaled),
        ``operating_point`` (per class: ``threshold``, ``sensitivity``, ``specificity``,
        ``ppv``, ``npv`` each with ``*_ci``, and ``confusion_matrix`` ``[[tn, fp], [fn, tp]]``)
        and ``bootstrap``.
    """
    classes = list(classes)
    p = np.asarray(probabilities, np.float64)
    val_arrays = None if val is None else (np.asarray(val[0]), np.asarray(val[1], np.float64))
    record = classification_metrics(y_true, p, classes, multi_label=multi_label)
    calib = calibration_metrics(y_true, p, classes, multi_label=multi_label)
    point = _operating_point(np.asarray(y_true), p, classes, multi_label, val_arrays, target_sensitivity, "val")
    thresholds = {c: (m or {}).get("threshold") for c, m in (point or {}).get("classes", {}).items()}
    if n_resamples:
        ci = bootstrap_intervals(y_true, p, classes, multi_label=multi_label, thresholds=thresholds,
                                 n_resamples=n_resamples, seed=seed)
    else:
        ci = {"auc_ci": None, "auc_per_class_ci": {c: None for c in classes}, "accuracy_ci": None,
              "brier_ci": None, "thresholds": {}, "bootstrap": {"n_resamples": 0, "seed": seed}}
    record.update(auc_ci=ci["auc_ci"], auc_per_class_ci=ci["auc_per_class_ci"], accuracy_ci=ci["accuracy_ci"],
                  brier=calib["brier"], brier_ci=ci["brier_ci"], ece=calib["ece"],
                  calibrated=calibration is not None)
    details: dict[str, Any] = {"method": None if calibration is None else "temperature",
                               "temperature": None if calibration is None else calibration.temperature,
                               "fitted_on": None if calibration is None else calibration.fitted_on,
                               "ece_per_class": calib["ece_per_class"], "ece_bins": calib["ece_bins"]}
    if calibration is not None and uncalibrated is not None:
        raw = calibration_metrics(y_true, uncalibrated, classes, multi_label=multi_label)
        details.update(brier_uncalibrated=raw["brier"], ece_uncalibrated=raw["ece"])
    details["curves"] = calib["curves"]
    record["calibration"] = details
    if point is not None:
        for name, metrics in point["classes"].items():
            if metrics is not None:
                found = ci["thresholds"].get(name, {})
                point["classes"][name] = {"threshold": metrics["threshold"],
                                          **{f"{key}{end}": metrics[key] if not end else found.get(f"{key}_ci")
                                             for key in THRESHOLD_METRICS for end in ("", "_ci")},
                                          "confusion_matrix": metrics["confusion_matrix"]}
    record["operating_point"] = point
    record["bootstrap"] = ci["bootstrap"]
    return record
