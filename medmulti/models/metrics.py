"""Evaluation metrics on predicted probabilities: exact ROC AUC, ROC curve, confusion matrix.

Written with numpy/scipy rather than taken from scikit-learn, which medmulti does not
depend on; ``roc_auc`` is the Mann-Whitney U statistic (exact, ties counted half),
tested against a brute-force pair count and against ``keras.metrics.AUC``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["roc_auc", "roc_curve", "confusion_matrix", "classification_metrics"]


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
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


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
    p = np.asarray(probabilities, np.float64)
    k = len(classes)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probabilities must have shape (n, {k}), got {p.shape}")
    y = np.asarray(y_true)
    if multi_label:
        onehot = y.astype(np.int64).reshape(p.shape)
    else:
        index = y.astype(np.int64).ravel() if y.ndim == 1 else np.argmax(y, axis=1)
        onehot = np.eye(k, dtype=np.int64)[index]
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
