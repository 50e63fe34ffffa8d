"""What the subcommands print: plain-text tables, metrics, the patients left out."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..text import printable

__all__ = ["format_table", "format_subsets", "print_metrics", "print_exclusions"]


def format_table(rows: Sequence[Sequence[object]], header: Sequence[object]) -> list[str]:
    """Lay rows out in left-aligned columns, two spaces apart.

    Parameters
    ----------
    rows : sequence of sequences
        The rows; each as long as ``header``.
    header : sequence
        Column titles (the first line).

    Returns
    -------
    list of str
        The header line, then one line per row, trailing spaces removed. Cells
        are shown with control characters escaped (:func:`medmulti.text.printable`):
        file names and header values cannot drive the terminal or break a row.
    """
    lines = [[printable(c) for c in r] for r in (header, *rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return ["  ".join(r[i].ljust(widths[i]) for i in range(len(header))).rstrip() for r in lines]


def format_subsets(result: Mapping[str, Any]) -> list[str]:
    """The table of a subset evaluation: one line per set of modalities.

    Parameters
    ----------
    result : Mapping
        As returned by :func:`medmulti.training.subsets.evaluate_subsets`.

    Returns
    -------
    list of str
        :func:`format_table` lines: ``{ct, mr}``, ROC AUC with its 95% interval
        (``0.912 [0.861, 0.953]``; ``n/a`` where undefined), accuracy, patients.
    """
    rows = []
    for r in result["subsets"].values():
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        if r.get("auc_ci"):
            auc += " [{:.3f}, {:.3f}]".format(*r["auc_ci"])
        rows.append(("{" + ", ".join(r["modalities"]) + "}", auc, f"{r['accuracy']:.3f}", r["n"]))
    return format_table(rows, ("modalities", "ROC AUC [95% interval]", "accuracy", "n"))


def print_metrics(name: str, metrics: dict) -> None:
    """Print one line of test metrics.

    Parameters
    ----------
    name : str
        Row label.
    metrics : dict
        As returned by :func:`medmulti.models.metrics.classification_metrics`.
    """
    if not metrics:
        print(f"{name}: no test split")
        return
    auc = metrics.get("auc")
    auc_text = "n/a" if auc is None else f"{auc:.3f}"
    print(f"{name}: test ROC AUC {auc_text}, accuracy {metrics['accuracy']:.3f} (n={metrics['n']})")


def print_exclusions(excluded: dict) -> None:
    """Print the patients the policies left out and the inputs fed as zeros, per split.

    Parameters
    ----------
    excluded : dict
        Split -> ``{"skipped": [...], "zeroed": [...]}`` as in the run card.
    """
    for split, found in excluded.items():
        for what, verb in (("skipped", "skipped"), ("zeroed", "fed as zeros")):
            for rec in found.get(what, []):
                modality = rec["modality"] or "row"
                print(printable(f"{split}: {verb}: patient {rec['patient_id']} ({modality}: {rec['reason']})"))
