"""PNG pictures of a training run: learning curves, confusion matrix and ROC curves.

Uses :class:`matplotlib.figure.Figure` directly (no ``pyplot``, no global backend
switch), so it is safe in scripts, notebooks and worker processes.

Text is literal: class names, titles and metric names are drawn with
``parse_math=False`` (a ``$`` is a dollar sign, never mathtext, so a class named
``"$\\frac$"`` cannot crash a run after training) and with control characters
escaped by :func:`medmulti.text.printable`.
"""

from __future__ import annotations

from os import PathLike
from typing import Any, Mapping, Sequence

import numpy as np

from ..text import printable
from .metrics import confusion_matrix, roc_auc, roc_curve

__all__ = ["plot_history", "plot_confusion_roc"]

#: Text properties for every string drawn: literal text, no mathtext, no TeX.
LITERAL_TEXT: dict[str, Any] = {"parse_math": False, "usetex": False}


def literal_legend(ax: Any, **kwargs: Any) -> None:
    """``ax.legend(**kwargs)`` with literal entries (labels are escaped where they are set).

    No legend when nothing is labelled (a test split of one class has no ROC curve).
    """
    if not ax.get_legend_handles_labels()[0]:
        return
    legend = ax.legend(**kwargs)
    for text in legend.get_texts():
        text.set(**LITERAL_TEXT)


def plot_history(history: Mapping[str, Sequence[float]], path: str | PathLike[str], *, title: str = "") -> None:
    """Plot per-epoch training curves: one panel per metric, train and validation.

    Parameters
    ----------
    history : Mapping
        Metric name -> per-epoch values, as ``keras.callbacks.History.history``
        (``"loss"``, ``"val_loss"``, ``"auc"``, ...).
    path : str or PathLike
        The PNG to write.
    title : str
        Figure title.
    """
    from matplotlib.figure import Figure

    names = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "lr", "epoch")]
    names = names or ["loss"]
    fig = Figure(figsize=(4 * len(names), 3.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            values = history.get(key)
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(printable(name), **LITERAL_TEXT)
        ax.grid(alpha=0.3)
        literal_legend(ax)
    if title:
        fig.suptitle(printable(title), **LITERAL_TEXT)
    fig.savefig(path, dpi=100)


def plot_confusion_roc(
    y_true: Any,
    probabilities: Any,
    classes: Sequence[str],
    path: str | PathLike[str],
    *,
    multi_label: bool = False,
    title: str = "",
) -> None:
    """Plot the confusion matrix (single-label) and one-vs-rest ROC curves per class.

    Parameters
    ----------
    y_true : array_like
        Class indices ``(n,)``, one-hot or multi-hot ``(n, k)``.
    probabilities : array_like, shape (n, k)
        Model outputs.
    classes : sequence of str
        Class names.
    path : str or PathLike
        The PNG to write.
    multi_label : bool
        Multi-label outputs: only ROC curves are drawn.
    title : str
        Figure title.
    """
    from matplotlib.figure import Figure

    p = np.asarray(probabilities, np.float64)
    k = len(classes)
    y = np.asarray(y_true)
    if multi_label:
        onehot = y.astype(np.int64).reshape(p.shape)
    else:
        index = y.astype(np.int64).ravel() if y.ndim == 1 else np.argmax(y, axis=1)
        onehot = np.eye(k, dtype=np.int64)[index]
    panels = 1 if multi_label else 2
    fig = Figure(figsize=(4.5 * panels, 4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if not multi_label:
        ax = axes[0]
        cm = confusion_matrix(np.argmax(onehot, 1), np.argmax(p, 1), k)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        names = [printable(c) for c in classes]
        ax.set_xticks(range(k), names, rotation=30, **LITERAL_TEXT)
        ax.set_yticks(range(k), names, **LITERAL_TEXT)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion matrix")
    ax = axes[-1]
    for i, name in enumerate(classes):
        if not multi_label and k == 2 and i == 0:
            continue  # two classes: one curve says it all
        auc = roc_auc(onehot[:, i], p[:, i])
        if auc is None:
            continue
        fpr, tpr = roc_curve(onehot[:, i], p[:, i])
        ax.plot(fpr, tpr, label=f"{printable(name)} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    literal_legend(ax, loc="lower right")
    if title:
        fig.suptitle(printable(title), **LITERAL_TEXT)
    fig.savefig(path, dpi=100)
