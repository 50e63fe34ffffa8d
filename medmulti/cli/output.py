"""What the subcommands print: plain-text tables, metrics, the patients left out."""

from __future__ import annotations

from typing import Sequence

from ..text import printable

__all__ = ["format_table", "print_metrics", "print_exclusions"]


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
