"""Check that images share one grid (shape, spacing, origin, direction), with explicit tolerances."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from ..errors import GeometryError
from ..image import Image
from .resample import Grid

__all__ = ["Mismatch", "check_coregistered"]


@dataclass(frozen=True)
class Mismatch:
    """One property in which an image disagrees with the first one.

    Attributes
    ----------
    name : str
        The disagreeing image (key in the mapping, or its position).
    property : str
        ``"dims"``, ``"shape"``, ``"spacing"``, ``"origin"`` or ``"direction"``.
    expected, found : str
        The reference's and this image's values, as text (geometry only).
    difference : float
        Largest absolute difference (mm for spacing/origin, cosine for direction).
    tolerance : float
        The tolerance that was exceeded.
    """

    name: str
    property: str
    expected: str
    found: str
    difference: float
    tolerance: float

    def __str__(self) -> str:
        return (f"{self.name}: {self.property} {self.found} differs from {self.expected} "
                f"(by {self.difference:.4g}, tolerance {self.tolerance:g})")

    def summary(self) -> str:
        """The mismatch without the geometry values themselves (for error messages)."""
        unit = {"spacing": " mm", "origin": " mm", "shape": " voxels"}.get(self.property, "")
        return f"{self.name}: {self.property} differs by {self.difference:.4g}{unit} (tolerance {self.tolerance:g}{unit})"


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + ")"


def check_coregistered(
    images: Union[Mapping[str, Union[Image, Grid]], Sequence[Union[Image, Grid]]],
    *,
    spacing_tol_mm: float = 1e-3,
    origin_tol_mm: float = 1e-2,
    direction_tol: float = 1e-4,
    on_mismatch: str = "error",
) -> list[Mismatch]:
    """Check that 3D images lie on the same grid, naming each disagreement.

    The first image is the reference; every other image is compared with it.

    Parameters
    ----------
    images : mapping of name -> Image/Grid, or a sequence
        The images (names are used in the report; positions for a sequence).
    spacing_tol_mm : float
        Largest allowed spacing difference per axis, mm.
    origin_tol_mm : float
        Largest allowed distance between the first voxel centres per axis, mm.
    direction_tol : float
        Largest allowed difference of any direction-cosine entry.
    on_mismatch : {"error", "report"}
        Raise a :class:`~medmulti.errors.GeometryError` listing every mismatch
        (default), or return them.

    Returns
    -------
    list of Mismatch
        Empty when everything agrees.

    Raises
    ------
    GeometryError
        With ``on_mismatch="error"`` when any property disagrees, or when an
        image has no 3D geometry. The message lists image, property, by how
        much it differs and how to fix it (the values themselves, read from
        headers, are only in the returned/attached :class:`Mismatch` records).

    Examples
    --------
    >>> a = Image(np.zeros((2, 3, 4)), np.eye(4), (1, 1, 1), "CT")
    >>> b = Image(np.zeros((2, 3, 4)), np.diag([1, 1, 2, 1.0]), (1, 1, 2), "MR")
    >>> [str(m) for m in check_coregistered({"ct": a, "mr": b}, on_mismatch="report")]
    ['mr: spacing (1, 1, 2) differs from (1, 1, 1) (by 1, tolerance 0.001)']
    """
    if on_mismatch not in ("error", "report"):
        raise GeometryError(f"on_mismatch must be 'error' or 'report', got {on_mismatch!r}", keyword="on_mismatch")
    items = list(images.items()) if isinstance(images, Mapping) else [(str(i), im) for i, im in enumerate(images)]
    grids = []
    for name, im in items:
        if isinstance(im, Image) and (im.affine is None or im.ndim != 3):
            raise GeometryError("check_coregistered compares 3D images with geometry; this one has none",
                                modality=name)
        grids.append((name, Grid.of(im)))
    problems: list[Mismatch] = []
    if len(grids) < 2:
        return problems
    ref_name, ref = grids[0]
    ref_dir = ref.affine[:3, :3] / np.asarray(ref.spacing)[None, :]
    for name, g in grids[1:]:
        if g.shape != ref.shape:
            diff = float(np.max(np.abs(np.subtract(g.shape, ref.shape))))
            problems.append(Mismatch(name, "shape", str(ref.shape), str(g.shape), diff, 0))
        d = np.abs(np.subtract(g.spacing, ref.spacing)).max()
        if d > spacing_tol_mm:
            problems.append(Mismatch(name, "spacing", _fmt(ref.spacing), _fmt(g.spacing), float(d), spacing_tol_mm))
        d = np.abs(g.affine[:3, 3] - ref.affine[:3, 3]).max()
        if d > origin_tol_mm:
            problems.append(Mismatch(name, "origin", _fmt(ref.affine[:3, 3]), _fmt(g.affine[:3, 3]), float(d),
                                     origin_tol_mm))
        g_dir = g.affine[:3, :3] / np.asarray(g.spacing)[None, :]
        d = np.abs(g_dir - ref_dir).max()
        if d > direction_tol:
            problems.append(Mismatch(name, "direction", _fmt(ref_dir), _fmt(g_dir), float(d), direction_tol))
    if problems and on_mismatch == "error":
        lines = "; ".join(p.summary() for p in problems)
        err = GeometryError(
            f"images are not on the same grid as {ref_name!r}: {lines}",
            modality=problems[0].name,
            keyword=problems[0].property,
            hint=f"resample them onto {ref_name!r} with medmulti.geometry.resample_to(image, reference) "
                 "(or run preprocess_study, which does it), or loosen the tolerances if the differences are rounding",
        )
        err.mismatches = problems  # type: ignore[attr-defined]
        raise err
    return problems
