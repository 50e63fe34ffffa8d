"""Plain-text tables for the subcommands' output."""

from __future__ import annotations

from typing import Sequence

from ..text import printable

__all__ = ["format_table"]


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
