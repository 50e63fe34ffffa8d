"""Header-level checks of one manifest row, as a light, picklable process-pool task.

Kept apart from :mod:`medmulti.data.sequence` so that worker processes do not import
Keras/TensorFlow.
"""

from __future__ import annotations

from typing import Any

from ..manifest import check_row as manifest_check_row
from ..spec import StudySpec

__all__ = ["row_error_records"]


def row_error_records(row: Any, spec: StudySpec, check_row: Any = None) -> list[dict[str, Any]]:
    """Return the error problems of one row as JSON records.

    Parameters
    ----------
    row : ManifestRow
        The row.
    spec : StudySpec
        The study spec.
    check_row : callable, optional
        Defaults to :func:`medmulti.manifest.check_row` (header level, ``deep=False``).

    Returns
    -------
    list of dict
        ``Problem.to_dict()`` of every problem with severity ``"error"``.
    """
    if check_row is None:
        check_row = manifest_check_row
    return [p.to_dict() for p in check_row(row, spec, deep=False).problems if p.severity == "error"]
