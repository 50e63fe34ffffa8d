"""Evaluation metrics on predicted probabilities: exact ROC AUC, ROC curve, confusion
matrix, an operating point and its threshold metrics, Brier score, calibration bins and
expected calibration error, and patient-bootstrap confidence intervals for all of them.

Written with numpy/scipy rather than taken from scikit-learn, which medmulti does not
depend on; ``roc_auc`` is the Mann-Whitney U statistic (exact, ties counted half),
tested against a brute-force pair count and against ``keras.metrics.AUC``; the rest is
tested against scikit-learn (a test-only dependency) and ``scipy.stats.bootstrap``.

Conventions
-----------
*Positive class.* A binary single-label spec's positive class is its second class
(``classes[1]``, e.g. ``disease`` in ``[healthy, disease]``). With more than two classes,
and for multi-label specs, every class is treated one-vs-rest.

*Calibration bins.* Ten equal-width bins of the probability; bin ``b`` holds
``(b/10, (b+1)/10]`` and the first also holds 0 (scikit-learn's
``calibration_curve(strategy="uniform")`` convention).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["roc_auc", "roc_curve", "confusion_matrix", "classification_metrics", "label_matrix",
           "positive_classes", "choose_threshold", "threshold_metrics", "brier_score", "calibration_bins",
           "expected_calibration_error", "calibration_metrics", "bootstrap_indices", "percentile_interval",
           "bootstrap_intervals", "mean_and_sd", "THRESHOLD_METRICS", "N_CALIBRATION_BINS"]

#: The ratios :func:`threshold_metrics` reports (each with an interval in :func:`bootstrap_intervals`).
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv")

#: Equal-width probability bins of the reliability diagram and the ECE.
N_CALIBRATION_BINS = 10


def roc_auc(y_true: Any, score: Any) -> float | None:
    """Area under the ROC curve of a binary problem.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (n,)
        True labels (1 = positive).
    score : array_like of float, shape (n,)
        Higher means more likely positive.

    Returns
    -------
    float or None
        P(score of a random positive > score of a random negative), ties counting
        one half; ``None`` when only one class is present (AUC undefined).

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and score differ in length: {y.shape} vs {s.shape}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points (false positive rate, true positive rate), from (0, 0) to (1, 1).

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (n,)
    score : array_like of float, shape (n,)

    Returns
    -------
    fpr, tpr : numpy.ndarray
        float64, one point per distinct threshold plus the origin.
    """
    _, fpr, tpr = _roc_points(y_true, score)
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


def _roc_points(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, fpr, tpr): one point per distinct score ``t``, predicting ``score >= t``."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return s[last], fps / n_neg, tps / n_pos


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape (n,)
        Class indices.
    num_classes : int

    Returns
    -------
    numpy.ndarray
        int64, shape ``(num_classes, num_classes)``.
    """
    t = np.asarray(y_true, np.int64).ravel()
    p = np.asarray(y_pred, np.int64).ravel()
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (t, p), 1)
    return out


def classification_metrics(
    y_true: Any, probabilities: Any, classes: Sequence[str], *, multi_label: bool = False, threshold: float = 0.5
) -> dict[str, Any]:
    """Accuracy, ROC AUC per class and confusion matrix, as a JSON-ready dict.

    Parameters
    ----------
    y_true : array_like
        Single-label: int class indices ``(n,)`` or one-hot ``(n, k)``.
        Multi-label: multi-hot ``(n, k)``.
    probabilities : array_like, shape (n, k)
        Model outputs (softmax or sigmoid).
    classes : sequence of str
        Class names, in output order.
    multi_label : bool
        Sigmoid outputs, one independent decision per class at ``threshold``.
    threshold : float
        Decision threshold for multi-label outputs.

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``auc`` (mean of the defined per-class AUCs; for two
        single-label classes this equals the AUC of either class), ``auc_per_class``
        (class -> AUC or ``None``), ``confusion_matrix`` (``{"classes", "matrix"}``
        for single-label; per class ``[[tn, fp], [fn, tp]]`` for multi-label), and
        ``class_counts``.
    """
    p = _probabilities(probabilities, len(classes))
    onehot = label_matrix(y_true, len(classes), multi_label=multi_label)
    k = len(classes)
    aucs = {c: roc_auc(onehot[:, i], p[:, i]) for i, c in enumerate(classes)}
    defined = [a for a in aucs.values() if a is not None]
    out: dict[str, Any] = {
        "n": int(p.shape[0]),
        "auc": float(np.mean(defined)) if defined else None,
        "auc_per_class": aucs,
        "class_counts": {c: int(onehot[:, i].sum()) for i, c in enumerate(classes)},
    }
    if multi_label:
        pred = (p >= threshold).astype(np.int64)
        out["accuracy"] = float((pred == onehot).mean())  # per decision
        out["exact_match"] = float((pred == onehot).all(axis=1).mean())
        out["confusion_matrix"] = {
            c: confusion_matrix(onehot[:, i], pred[:, i], 2).tolist() for i, c in enumerate(classes)
        }
    else:
        pred = np.argmax(p, axis=1)
        true = np.argmax(onehot, axis=1)
        out["accuracy"] = float((pred == true).mean())
        out["confusion_matrix"] = {"classes": list(classes), "matrix": confusion_matrix(true, pred, k).tolist()}
    return out


# -- labels --------------------------------------------------------------------------------
def _probabilities(probabilities: Any, num_classes: int) -> np.ndarray:
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[1] != num_classes:
        raise ValueError(f"probabilities must have shape (n, {num_classes}), got {p.shape}")
    return p


def label_matrix(y_true: Any, num_classes: int, *, multi_label: bool = False) -> np.ndarray:
    """Labels as a 0/1 matrix, one column per class.

    Parameters
    ----------
    y_true : array_like
        Single-label: int class indices ``(n,)`` or one-hot ``(n, k)``.
        Multi-label: multi-hot ``(n, k)``.
    num_classes : int
    multi_label : bool

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n, num_classes)``: one-hot (single-label) or multi-hot.

    Examples
    --------
    >>> label_matrix([1, 0], 2).tolist()
    [[0, 1], [1, 0]]
    """
    y = np.asarray(y_true)
    if multi_label:
        return y.astype(np.int64).reshape(-1, num_classes)
    index = y.astype(np.int64).ravel() if y.ndim == 1 else np.argmax(y, axis=1)
    return np.eye(num_classes, dtype=np.int64)[index]


def positive_classes(classes: Sequence[str], *, multi_label: bool = False) -> list[int]:
    """Indices of the classes that get an operating point: the second class of a binary
    single-label spec, every class otherwise (one-vs-rest).

    Examples
    --------
    >>> positive_classes(["healthy", "disease"]), positive_classes(["a", "b", "c"])
    ([1], [0, 1, 2])
    """
    return [1] if len(classes) == 2 and not multi_label else list(range(len(classes)))


# -- the operating point -------------------------------------------------------------------
def choose_threshold(y_true: Any, score: Any, *, target_sensitivity: float | None = None) -> float | None:
    """A decision threshold (predict positive when ``score >= threshold``) chosen on a sample.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (n,)
    score : array_like of float, shape (n,)
    target_sensitivity : float in (0, 1], optional
        Default: Youden's J (the threshold maximising sensitivity + specificity - 1;
        among ties, the highest). Given: the highest threshold whose sensitivity on
        this sample is at least ``target_sensitivity`` (the most specific one that
        reaches it).

    Returns
    -------
    float or None
        One of the scores (as scikit-learn's ``roc_curve`` thresholds); ``None`` when
        the sample has only one class.

    Examples
    --------
    >>> choose_threshold([0, 0, 1, 0, 1, 1], [0.1, 0.3, 0.35, 0.4, 0.6, 0.9])
    0.6
    >>> choose_threshold([0, 0, 1, 0, 1, 1], [0.1, 0.3, 0.35, 0.4, 0.6, 0.9], target_sensitivity=1.0)
    0.35
    """
    y = np.asarray(y_true).astype(bool).ravel()
    if y.all() or not y.any():
        return None
    thresholds, fpr, tpr = _roc_points(y, score)
    if target_sensitivity is None:
        j = tpr - fpr
        return float(thresholds[int(np.argmax(j >= j.max() - 1e-12))])  # ties (as floats): the highest
    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target_sensitivity must lie in (0, 1], got {target_sensitivity}")
    return float(thresholds[int(np.argmax(tpr >= target_sensitivity - 1e-12))])


def _ratio(num: Any, den: Any) -> Any:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _threshold_ratios(tn: Any, fp: Any, fn: Any, tp: Any) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV from counts (arrays: one per bootstrap replicate)."""
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def _number(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def threshold_metrics(y_true: Any, score: Any, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV and the confusion counts at a threshold.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (n,)
    score : array_like of float, shape (n,)
    threshold : float
        Predict positive when ``score >= threshold``.

    Returns
    -------
    dict
        ``threshold``, ``sensitivity``, ``specificity``, ``ppv``, ``npv`` (``None``
        where the denominator is zero) and ``confusion_matrix`` ``[[tn, fp], [fn, tp]]``
        (rows true negative/positive, columns predicted negative/positive).

    Examples
    --------
    >>> m = threshold_metrics([0, 0, 1, 1], [0.2, 0.6, 0.4, 0.9], 0.5)
    >>> m["sensitivity"], m["specificity"], m["confusion_matrix"]
    (0.5, 0.5, [[1, 1], [1, 1]])
    """
    y = np.asarray(y_true).astype(bool).ravel()
    pred = np.asarray(score, np.float64).ravel() >= threshold
    cm = confusion_matrix(y, pred, 2)
    (tn, fp), (fn, tp) = cm
    out: dict[str, Any] = {"threshold": float(threshold)}
    out.update({k: _number(v) for k, v in _threshold_ratios(tn, fp, fn, tp).items()})
    out["confusion_matrix"] = cm.tolist()
    return out


# -- calibration ---------------------------------------------------------------------------
def _brier_terms(onehot: np.ndarray, p: np.ndarray, multi_label: bool) -> np.ndarray:
    """Per-patient Brier contributions; their mean is :func:`brier_score`."""
    if multi_label:
        terms = ((onehot - p) ** 2).mean(axis=1)
    elif p.shape[1] == 2:
        terms = (onehot[:, 1] - p[:, 1]) ** 2
    else:
        terms = ((onehot - p) ** 2).sum(axis=1)
    return np.asarray(terms, np.float64)


def brier_score(y_true: Any, probabilities: Any, *, multi_label: bool = False) -> float:
    """Mean squared error of the probabilities.

    Parameters
    ----------
    y_true : array_like
        As :func:`label_matrix`.
    probabilities : array_like, shape (n, k)
    multi_label : bool

    Returns
    -------
    float
        Binary single-label: ``mean((y_positive - p_positive)**2)`` in [0, 1].
        More than two classes: ``mean(sum_k (y_k - p_k)**2)`` in [0, 2] (Brier's
        original multi-class score). Multi-label: the mean over classes of the
        per-class binary score. These equal scikit-learn's ``brier_score_loss``.

    Examples
    --------
    >>> brier_score([1, 0], [[0.2, 0.8], [0.6, 0.4]])
    0.1
    """
    p = np.asarray(probabilities, np.float64)
    return float(_brier_terms(label_matrix(y_true, p.shape[1], multi_label=multi_label), p, multi_label).mean())


def calibration_bins(y_true: Any, probability: Any, *, n_bins: int = N_CALIBRATION_BINS) -> dict[str, list[Any]]:
    """Reliability-diagram bins of one binary probability.

    Parameters
    ----------
    y_true : array_like of {0, 1}, shape (n,)
        Whether the event happened (class present, or prediction correct).
    probability : array_like of float in [0, 1], shape (n,)
        Its predicted probability.
    n_bins : int
        Equal-width bins over [0, 1]; bin ``b`` holds ``(b/n, (b+1)/n]``, the first
        also 0.

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), and per bin ``count``, ``mean_predicted`` and
        ``fraction_positive`` (``None`` for an empty bin). The non-empty bins equal
        scikit-learn's ``calibration_curve(y, p, n_bins=n_bins)`` (reversed roles:
        it returns ``(fraction_positive, mean_predicted)``).
    """
    y = np.asarray(y_true, np.float64).ravel()
    p = np.asarray(probability, np.float64).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], p, side="left")
    count = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, weights=p, minlength=n_bins)
    hits = np.bincount(which, weights=y, minlength=n_bins)
    return {"edges": edges.tolist(), "count": count.tolist(),
            "mean_predicted": [_number(v) for v in _ratio(sums, count)],
            "fraction_positive": [_number(v) for v in _ratio(hits, count)]}


def expected_calibration_error(y_true: Any, probability: Any, *, n_bins: int = N_CALIBRATION_BINS) -> float:
    """Expected calibration error of one binary probability.

    ``sum_b (n_b / n) * |fraction_positive_b - mean_predicted_b|`` over the bins of
    :func:`calibration_bins` (Naeini et al. 2015; Guo et al. 2017 use it on the
    top-label confidence, see :func:`calibration_metrics`).

    Examples
    --------
    >>> round(expected_calibration_error([0, 1, 1, 1], [0.05, 0.95, 0.95, 0.55]), 6)  # (0.05 + 0.45 + 2 * 0.05) / 4
    0.15
    """
    bins = calibration_bins(y_true, probability, n_bins=n_bins)
    n = sum(bins["count"])
    return float(sum(c / n * abs(f - m) for c, f, m in zip(bins["count"], bins["fraction_positive"],
                                                             bins["mean_predicted"]) if c))


def calibration_metrics(y_true: Any, probabilities: Any, classes: Sequence[str], *, multi_label: bool = False,
                        n_bins: int = N_CALIBRATION_BINS) -> dict[str, Any]:
    """Brier score, expected calibration error and reliability bins.

    Parameters
    ----------
    y_true : array_like
        As :func:`label_matrix`.
    probabilities : array_like, shape (n, k)
    classes : sequence of str
    multi_label : bool
    n_bins : int
        Equal-width bins (default 10).

    Returns
    -------
    dict
        ``brier`` (:func:`brier_score`); ``ece``: of the positive class's probability
        for a binary spec, of the top-label confidence (max probability against "the
        argmax was right", Guo et al. 2017) for more than two classes, the mean of the
        per-class ECEs for a multi-label spec; ``ece_per_class`` (one-vs-rest);
        ``ece_bins``; ``curves``: name -> :func:`calibration_bins` (the positive class;
        or "top label" and every class).
    """
    p = _probabilities(probabilities, len(classes))
    onehot = label_matrix(y_true, len(classes), multi_label=multi_label)
    per_class = {c: calibration_bins(onehot[:, i], p[:, i], n_bins=n_bins) for i, c in enumerate(classes)}
    ece_per_class = {c: expected_calibration_error(onehot[:, i], p[:, i], n_bins=n_bins)
                     for i, c in enumerate(classes)}
    curves: dict[str, Any]
    if multi_label:
        ece = float(np.mean(list(ece_per_class.values())))
        curves = per_class
    elif len(classes) == 2:
        ece = ece_per_class[classes[1]]
        curves = {classes[1]: per_class[classes[1]]}
    else:
        correct = np.argmax(p, axis=1) == np.argmax(onehot, axis=1)
        ece = expected_calibration_error(correct, p.max(axis=1), n_bins=n_bins)
        curves = {"top label": calibration_bins(correct, p.max(axis=1), n_bins=n_bins), **per_class}
    return {"brier": brier_score(onehot, p, multi_label=multi_label), "ece": ece, "ece_per_class": ece_per_class,
            "ece_bins": n_bins, "curves": curves}


# -- bootstrap -----------------------------------------------------------------------------
def bootstrap_indices(n: int, n_resamples: int, seed: int | None = 0) -> np.ndarray:
    """Patient indices of ``n_resamples`` bootstrap replicates, drawn with replacement.

    The draw is ``np.random.default_rng(seed).integers(0, n, (n_resamples, n))``, the
    draw ``scipy.stats.bootstrap`` makes with ``rng=np.random.default_rng(seed)``, so
    both resample the same patients.

    Returns
    -------
    numpy.ndarray
        int64, shape ``(n_resamples, n)``.
    """
    return np.random.default_rng(seed).integers(0, n, (n_resamples, n), dtype=np.int64)


def percentile_interval(values: Any, confidence: float = 0.95) -> list[float] | None:
    """The percentile bootstrap interval ``[q(alpha/2), q(1 - alpha/2)]`` of replicate values.

    Undefined replicates (NaN: an AUC on a resample of one class) are left out;
    ``None`` when none is defined. Quantiles are linear (numpy's and scipy's default).

    Examples
    --------
    >>> [round(v, 6) for v in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    if not v.size:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def _auc_replicates(y: np.ndarray, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """:func:`roc_auc` of every replicate (rows of ``idx``); NaN where one class is missing."""
    from scipy.stats import rankdata

    yb = y[idx]
    ranks = rankdata(s[idx], axis=1)
    n_pos = yb.sum(axis=1).astype(np.float64)
    n_neg = idx.shape[1] - n_pos
    u = (ranks * yb).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return np.asarray(_ratio(u, n_pos * n_neg), np.float64)


def bootstrap_intervals(
    y_true: Any,
    probabilities: Any,
    classes: Sequence[str],
    *,
    multi_label: bool = False,
    thresholds: Mapping[str, float | None] | None = None,
    n_resamples: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals, resampling patients, for the metrics of
    :func:`classification_metrics`, :func:`brier_score` and :func:`threshold_metrics`.

    Every metric is computed on the same replicates (:func:`bootstrap_indices`).

    Parameters
    ----------
    y_true, probabilities, classes, multi_label
        As :func:`classification_metrics`.
    thresholds : mapping, optional
        Class -> threshold of its operating point (one-vs-rest); intervals for
        its :data:`THRESHOLD_METRICS`.
    n_resamples : int
        Replicates (default 2,000).
    seed : int, optional
        Seed of :func:`numpy.random.default_rng`.
    confidence : float
        Interval coverage (default 0.95).

    Returns
    -------
    dict
        ``auc_ci``, ``accuracy_ci``, ``brier_ci`` (``[lo, hi]`` or ``None``),
        ``auc_per_class_ci`` (class -> interval), ``thresholds`` (class ->
        ``{"<metric>_ci": ...}``), and ``bootstrap``: ``n_resamples``, ``seed``,
        ``confidence``, ``method`` ("percentile"), ``unit`` ("patient") and
        ``undefined_auc`` (replicates whose macro AUC was undefined, left out).

    Notes
    -----
    Accuracy is that of :func:`classification_metrics` (argmax; per decision at 0.5
    for multi-label). The macro AUC of a replicate is the mean of its defined per-class
    AUCs, as the point estimate.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    p = _probabilities(probabilities, len(classes))
    onehot = label_matrix(y_true, len(classes), multi_label=multi_label)
    idx = bootstrap_indices(p.shape[0], n_resamples, seed)
    if multi_label:
        correct = ((p >= 0.5) == onehot.astype(bool)).mean(axis=1)
    else:
        correct = (np.argmax(p, axis=1) == np.argmax(onehot, axis=1)).astype(np.float64)
    per_class = {c: _auc_replicates(onehot[:, i].astype(bool), p[:, i], idx) for i, c in enumerate(classes)}
    stacked = np.stack(list(per_class.values()))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates: nanmean says so
        macro = np.nanmean(stacked, axis=0)
    out: dict[str, Any] = {
        "auc_ci": percentile_interval(macro, confidence),
        "auc_per_class_ci": {c: percentile_interval(v, confidence) for c, v in per_class.items()},
        "accuracy_ci": percentile_interval(correct[idx].mean(axis=1), confidence),
        "brier_ci": percentile_interval(_brier_terms(onehot, p, multi_label)[idx].mean(axis=1), confidence),
        "thresholds": {},
    }
    for name, threshold in (thresholds or {}).items():
        if threshold is None:
            continue
        i = list(classes).index(name)
        pos, pred = onehot[:, i].astype(bool)[idx], (p[:, i] >= threshold)[idx]
        counts = ((~pos & ~pred).sum(1), (~pos & pred).sum(1), (pos & ~pred).sum(1), (pos & pred).sum(1))
        out["thresholds"][name] = {f"{k}_ci": percentile_interval(v, confidence)
                                   for k, v in _threshold_ratios(*counts).items()}
    out["bootstrap"] = {"n_resamples": int(n_resamples), "seed": seed, "confidence": confidence,
                        "method": "percentile", "unit": "patient", "undefined_auc": int(np.isnan(macro).sum())}
    return out


def mean_and_sd(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (``ddof=1``) of metrics over folds.

    Parameters
    ----------
    records : sequence of Mapping
        One metrics record per fold (as :func:`classification_metrics` returns).

    Returns
    -------
    (dict, dict)
        Metric name -> mean, and metric name -> standard deviation (``nan`` for one
        record), for every scalar metric of the first record (``n`` and booleans
        excepted) that is a finite number in every record.

    Examples
    --------
    >>> mean_and_sd([{"auc": 0.5, "n": 10}, {"auc": 1.0, "n": 12}])
    ({'auc': 0.75}, {'auc': 0.3535533905932738})
    """
    names = [k for k, v in (records[0] if records else {}).items()
             if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    mean, std = {}, {}
    for name in names:
        values = [m.get(name) for m in records]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
            mean[name] = float(np.mean(values))
            std[name] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return mean, std
