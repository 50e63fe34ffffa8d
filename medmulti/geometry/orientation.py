"""Reorientation to the canonical axial LPS layout, by axis permutation and flips only.

Canonical means: array axis 0 (slices, ``z``) runs towards Superior, axis 1
(rows, ``y``) towards Posterior and axis 2 (columns, ``x``) towards patient
Left -- what SimpleITK's ``DICOMOrient(image, "LPS")`` gives. Each array axis is
assigned to the world axis it is closest to (nibabel's ``io_orientation``), so
oblique images are reordered, never interpolated: their direction cosines stay
slightly oblique.
"""

from __future__ import annotations

import numpy as np

from ..errors import GeometryError
from ..image import Image

__all__ = ["orientation_codes", "orientation_code", "canonical_transform", "reorient_canonical", "is_canonical"]

_LPS = ("L", "P", "S")
_OPPOSITE = {"L": "R", "P": "A", "S": "I"}
#: world axis (0 L, 1 P, 2 S) that each canonical array axis (z, y, x) follows
_CANONICAL_WORLD = (2, 1, 0)


def _ornt(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    if np.isnan(ornt).any():
        raise GeometryError("the image affine is degenerate (an axis has no direction)", keyword="affine")
    return ornt


def orientation_codes(affine: np.ndarray) -> str:
    """Three letters: the LPS direction each array axis ``(z, y, x)`` points to.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine.

    Returns
    -------
    str
        E.g. ``"SPL"`` for the canonical axial layout, ``"LSA"``... for others.

    Examples
    --------
    >>> orientation_codes(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]]))
    'SPL'
    """
    out = []
    for world, flip in _ornt(affine):
        letter = _LPS[int(world)]
        out.append(letter if flip > 0 else _OPPOSITE[letter])
    return "".join(out)


def orientation_code(affine: np.ndarray | None) -> str:
    """Three letters: the LPS direction of the x, y, z (column, row, slice) axes, as tables show it.

    Parameters
    ----------
    affine : numpy.ndarray or None
        4x4 array-order LPS affine (``(z, y, x, 1) -> LPS``).

    Returns
    -------
    str
        :func:`orientation_codes` in x, y, z order, e.g. ``"LPS"`` for the canonical
        axial layout (x towards patient left, y posterior, z superior); ``"-"``
        without geometry (a projection radiograph).

    Examples
    --------
    >>> orientation_code(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]]))
    'LPS'
    >>> orientation_code(None)
    '-'
    """
    return "-" if affine is None else orientation_codes(np.asarray(affine))[::-1]


def canonical_transform(affine: np.ndarray, shape) -> tuple[tuple[int, int, int], tuple[bool, bool, bool], np.ndarray]:
    """The permutation and flips that make a grid canonical, and the new affine.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine.
    shape : sequence of int
        Array shape ``(z, y, x)``.

    Returns
    -------
    perm : tuple of int
        ``new_array = old_array.transpose(perm)`` (before flipping).
    flips : tuple of bool
        Which axes of the transposed array to reverse.
    new_affine : numpy.ndarray
        4x4 affine of the reoriented array.
    """
    ornt = _ornt(affine)
    world_of_axis = [int(w) for w in ornt[:, 0]]
    perm = tuple(world_of_axis.index(w) for w in _CANONICAL_WORLD)
    flips = tuple(bool(ornt[p, 1] < 0) for p in perm)
    shape = tuple(int(s) for s in shape)
    # new index n maps to old index o: o[perm[i]] = (shape[perm[i]] - 1 - n[i]) if flip else n[i]
    t = np.zeros((4, 4))
    t[3, 3] = 1.0
    for i, p in enumerate(perm):
        if flips[i]:
            t[p, i] = -1.0
            t[p, 3] = shape[p] - 1
        else:
            t[p, i] = 1.0
    return perm, flips, np.asarray(affine, dtype=np.float64) @ t


def is_canonical(affine: np.ndarray) -> bool:
    """True when the array axes already point S, P, L (no permutation or flip needed).

    Each array axis is matched to the world axis it is closest to (see
    :func:`orientation_codes`), so a slightly oblique axial image whose axes run
    roughly towards S, P, L counts as canonical.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine.

    Returns
    -------
    bool
        ``orientation_codes(affine) == "SPL"``: :func:`reorient_canonical` would
        leave the array as it is.

    Raises
    ------
    GeometryError
        If the affine is degenerate (an array axis has no direction).

    Examples
    --------
    >>> is_canonical(np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]]))
    True
    >>> is_canonical(np.eye(4))  # axis 0 runs towards L: codes "LPS"
    False
    """
    return orientation_codes(affine) == "SPL"


def reorient_canonical(image: Image) -> Image:
    """Return ``image`` with array axes permuted/flipped to the canonical layout.

    No interpolation: voxel values are moved, not resampled, and every voxel
    keeps its LPS position.

    Parameters
    ----------
    image : Image
        A 3D image with an affine.

    Returns
    -------
    Image
        A new image (the same object when already canonical); ``meta`` gains
        ``"source_orientation"`` (e.g. ``"LSA"``).

    Raises
    ------
    GeometryError
        For 2D images or images without geometry.
    """
    if image.affine is None or image.ndim != 3:
        raise GeometryError("only 3D images with geometry can be reoriented", modality=image.modality)
    perm, flips, new_affine = canonical_transform(image.affine, image.shape)
    codes = orientation_codes(image.affine)
    if perm == (0, 1, 2) and not any(flips):
        if image.meta.get("source_orientation") == codes:
            return image
        return Image(image.array, image.affine, image.spacing, image.modality,
                     {**image.meta, "source_orientation": codes})
    arr = image.array.transpose(perm)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    arr = np.ascontiguousarray(arr[index])
    spacing = tuple(image.spacing[p] for p in perm)
    return Image(arr, new_affine, spacing, image.modality, {**image.meta, "source_orientation": codes})
