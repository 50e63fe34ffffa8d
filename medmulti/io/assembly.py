"""Strict assembly of slices (files of a series, or frames of an enhanced object).

Slices are sorted along the slice normal ``row x column`` (ascending), then the
stack is refused with :class:`~medmulti.errors.SeriesGeometryError` when it does
not form one regular volume: duplicate positions, a missing slice (gap), non-uniform
spacing, or a sheared stack (gantry tilt). The geometry returned equals what
SimpleITK's ``ImageSeriesReader`` builds: origin at the first sorted slice,
direction columns ``(row, column, normal)``, slice spacing the mean distance.

Tolerances (module constants, documented in ``docs/readers.md``):

* ``ORIENTATION_TOLERANCE``: direction cosines that differ by more than this
  (any component) are different orientations.
* ``DUPLICATE_TOLERANCE_MM``: slices closer than this along the normal are duplicates.
* ``SPACING_TOLERANCE``: a step may differ from the median step by this fraction
  (plus ``SPACING_TOLERANCE_MM``); beyond ``GAP_FACTOR`` x the median it is a gap.
* ``TILT_TOLERANCE_MM``: in-plane offset between neighbouring slices beyond this
  (plus 1 % of the step) is a gantry tilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import CorruptFileError, SeriesGeometryError

__all__ = [
    "Stack",
    "assemble_stack",
    "check_orientation",
    "ORIENTATION_TOLERANCE",
    "DUPLICATE_TOLERANCE_MM",
    "SPACING_TOLERANCE",
    "SPACING_TOLERANCE_MM",
    "GAP_FACTOR",
    "TILT_TOLERANCE_MM",
]

ORIENTATION_TOLERANCE = 1e-4
DUPLICATE_TOLERANCE_MM = 1e-3
SPACING_TOLERANCE = 0.02
SPACING_TOLERANCE_MM = 0.01
GAP_FACTOR = 1.5
TILT_TOLERANCE_MM = 0.01


@dataclass
class Stack:
    """The sorted, checked geometry of a slice stack.

    Attributes
    ----------
    order : numpy.ndarray
        Indices of the input slices in ascending position along the normal.
    origin : numpy.ndarray
        LPS position of the first sorted slice's first pixel (mm).
    direction : numpy.ndarray
        3x3 matrix with columns ``(row, column, normal)`` (ITK's x, y, z axes).
    slice_spacing : float
        Distance between slices (mm).
    """

    order: np.ndarray
    origin: np.ndarray
    direction: np.ndarray
    slice_spacing: float


def check_orientation(iop: np.ndarray, *, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ImageOrientationPatient and return ``(row, column, normal)`` unit vectors.

    Parameters
    ----------
    iop : numpy.ndarray
        Six direction cosines.
    name : str
        File named in errors.

    Returns
    -------
    tuple of numpy.ndarray

    Raises
    ------
    CorruptFileError
        If the cosines are not two orthogonal unit vectors (within 1e-3).
    """
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(float(row @ col)) > 1e-3:
        raise CorruptFileError(
            "ImageOrientationPatient is not two orthogonal unit vectors", path=name, keyword="ImageOrientationPatient"
        )
    row, col = row / nr, col / nc
    return row, col, np.cross(row, col)


def assemble_stack(
    positions: np.ndarray,
    iop: np.ndarray,
    names: Sequence[str],
    *,
    what: str = "slice",
    where: str | None = None,
    single_spacing: float = 1.0,
) -> Stack:
    """Sort slices along the normal and refuse irregular stacks.

    Parameters
    ----------
    positions : numpy.ndarray
        ``(n, 3)`` ImagePositionPatient of each slice (mm).
    iop : numpy.ndarray
        The common ImageOrientationPatient (checked equal by the caller).
    names : sequence of str
        Name of each slice for messages (file name relative to the folder, or
        ``"frame 12"``).
    what : str
        ``"slice"`` or ``"frame"``, for messages.
    where : str, optional
        The folder or file named in errors.
    single_spacing : float
        Slice spacing to use when there is one slice (SpacingBetweenSlices or 1).

    Returns
    -------
    Stack

    Raises
    ------
    SeriesGeometryError
        Duplicate positions, gaps, non-uniform spacing or gantry tilt.
    """
    row, col, normal = check_orientation(iop, name=where or names[0])
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    direction = np.column_stack([row, col, normal])
    if len(order) == 1:
        return Stack(order, pos[0].copy(), direction, float(single_spacing))
    d = dist[order]
    steps = np.diff(d)
    dup = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if dup.size:
        i = int(dup[0])
        a, b = names[order[i]], names[order[i + 1]]
        raise SeriesGeometryError(
            f"duplicate {what} position: {a!r} and {b!r} lie at the same place along the slice normal "
            f"({dup.size} duplicate pair(s) in all)",
            path=where,
            keyword="ImagePositionPatient",
            hint="remove the duplicated files, or split series that mix several acquisitions (e.g. echoes or time points)",
        )
    median = float(np.median(steps))
    # gantry tilt: neighbouring slices shifted within the slice plane
    inplane = np.diff(pos[order], axis=0) - steps[:, None] * normal[None, :]
    shift = np.linalg.norm(inplane, axis=1)
    tilted = np.flatnonzero(shift > TILT_TOLERANCE_MM + 0.01 * median)
    if tilted.size:
        raise SeriesGeometryError(
            f"the {what}s are sheared (gantry tilt): each {what} is shifted within its plane relative to the previous "
            f"one, so they do not stack into a rectangular volume (first at {names[order[int(tilted[0]) + 1]]!r})",
            path=where,
            keyword="ImagePositionPatient",
            hint="medmulti refuses gantry-tilted series; resample them onto an untilted grid first "
            "(e.g. with a tilt-correcting DICOM converter) or export the series without tilt",
        )
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if gaps.size:
        i = int(gaps[0])
        missing = int(round(steps[i] / median)) - 1
        raise SeriesGeometryError(
            f"missing {what}(s): about {missing} {what}(s) missing between {names[order[i]]!r} and "
            f"{names[order[i + 1]]!r} (sorted positions {i} and {i + 1}; {gaps.size} gap(s) in all)",
            path=where,
            keyword="ImagePositionPatient",
            hint="the series is incomplete; re-export it from the archive",
        )
    tol = SPACING_TOLERANCE * median + SPACING_TOLERANCE_MM
    bad = np.flatnonzero(np.abs(steps - median) > tol)
    if bad.size:
        i = int(bad[0])
        raise SeriesGeometryError(
            f"non-uniform {what} spacing: the step between {names[order[i]]!r} and {names[order[i + 1]]!r} "
            f"(sorted positions {i} and {i + 1}) differs from the series' median step by "
            f"{abs(steps[i] - median) / median:.1%}",
            path=where,
            keyword="ImagePositionPatient",
            hint="the series mixes slice spacings; medmulti needs a regular grid",
        )
    spacing = float((d[-1] - d[0]) / (len(d) - 1))
    return Stack(order, pos[order[0]].copy(), direction, spacing)
