"""Reference grids and SimpleITK resampling onto them.

A :class:`Grid` is a shape plus an array-order LPS affine. :func:`make_grid`
builds the study's reference grid from the reference image (canonical axial
orientation, the spec's spacing, the spec's shape around the image centre or a
given point); :func:`resample_to` puts any 3D image on a grid through world
coordinates (SimpleITK ``Resample``: linear for images, nearest for masks),
optionally through a rigid transform found by registration. Voxels outside the
source image get a fill value: air (-1000 HU) for CT, 0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Sequence, Union

import numpy as np

from ..errors import GeometryError
from ..image import Image, itk_from_affine
from .affines import apply_affine, grid_center, grid_corners, voxel_sizes
from .orientation import canonical_transform

__all__ = [
    "Grid",
    "Interpolation",
    "make_grid",
    "resample_to",
    "fill_value_for",
    "body_center",
    "fit_2d",
    "as_sitk",
]

#: Fill values for voxels outside the source image, by DICOM modality / spec kind.
FILL_VALUES = {"CT": -1000.0, "ct": -1000.0}


class Interpolation(str, Enum):
    """Interpolators for :func:`resample_to`."""

    LINEAR = "linear"
    NEAREST = "nearest"
    BSPLINE = "bspline"


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D sampling grid: shape ``(z, y, x)`` and a 4x4 array-order LPS affine.

    Parameters
    ----------
    shape : tuple of int
        Number of voxels per array axis.
    affine : numpy.ndarray
        4x4 float64, ``(z, y, x, 1)`` -> LPS mm.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))
        if len(self.shape) != 3 or self.affine.shape != (4, 4) or min(self.shape) < 1:
            raise GeometryError("a Grid needs a 3-axis positive shape and a 4x4 affine", keyword="shape")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in array axis order, mm."""
        return tuple(float(v) for v in voxel_sizes(self.affine))  # type: ignore[return-value]

    @property
    def center(self) -> np.ndarray:
        """LPS position of the grid centre, mm."""
        return grid_center(self.affine, self.shape)

    @classmethod
    def of(cls, image: "Image | Grid") -> "Grid":
        """The grid an image lies on (or ``image`` itself when it is a Grid).

        Parameters
        ----------
        image : Image or Grid
            A 3D image with an affine, or a grid.

        Returns
        -------
        Grid
            ``image`` itself when it is a Grid; else a new Grid of
            ``image.shape`` and ``image.affine``.

        Raises
        ------
        GeometryError
            For images without 3D geometry (not 3D, or no affine: projection
            radiographs).
        """
        if isinstance(image, Grid):
            return image
        if image.affine is None or image.ndim != 3:
            raise GeometryError("this image has no 3D grid (projection radiograph?)", modality=image.modality)
        return cls(image.shape, image.affine)

    def to_dict(self) -> dict:
        """JSON-ready ``{"shape": [...], "affine": [[...]...]}``."""
        return {"shape": list(self.shape), "affine": self.affine.tolist()}


def as_sitk(image: Image, dtype=None):
    """SimpleITK image of ``image`` in native byte order (optionally cast to ``dtype``).

    ``Image.to_sitk`` hands the array to SimpleITK as is, which refuses
    big-endian arrays (nibabel keeps a file's byte order) and float16.

    Parameters
    ----------
    image : Image
        Any image; 3D images with an affine keep their geometry.
    dtype : numpy.dtype or str, optional
        Cast the voxel values to this type first (no copy when they already
        have it). Without it, float16 becomes float32 and other types are kept.

    Returns
    -------
    SimpleITK.Image
        As :meth:`~medmulti.image.Image.to_sitk` gives it: origin, spacing and
        direction from ``image.affine`` for 3D images, only the spacing for 2D
        ones. Non-native byte order is swapped to native first.
    """
    a = image.array
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a is image.array:
        return image.to_sitk()
    return Image(a, image.affine, image.spacing, image.modality).to_sitk()


def fill_value_for(modality: str) -> float:
    """Fill value outside the field of view: -1000 (air, HU) for CT, else 0.

    Parameters
    ----------
    modality : str
        DICOM Modality (``"CT"``) or spec kind (``"ct"``).

    Returns
    -------
    float
    """
    return FILL_VALUES.get(str(modality), 0.0)


def make_grid(
    reference: Image | Grid,
    spacing_mm: Sequence[float] | None = None,
    shape: Sequence[int] | None = None,
    center_mm: Sequence[float] | None = None,
) -> Grid:
    """Build a canonical (axial LPS) grid covering a reference image.

    Parameters
    ----------
    reference : Image or Grid
        The 3D reference; its direction is reordered canonically (permutation
        and flips only, see :func:`~medmulti.geometry.reorient_canonical`).
    spacing_mm : sequence of 3 float, optional
        Target spacing in canonical array order ``(z, y, x)``; default the
        reference's own (reordered).
    shape : sequence of 3 int, optional
        Target shape; default the number of voxels that covers the reference's
        field of view at the target spacing.
    center_mm : sequence of 3 float, optional
        LPS point the grid is centred on; default the reference's centre.

    Returns
    -------
    Grid

    Raises
    ------
    GeometryError
        For images without 3D geometry.
    """
    ref = Grid.of(reference)
    perm, _, can = canonical_transform(ref.affine, ref.shape)
    can_shape = np.array([ref.shape[p] for p in perm], dtype=np.float64)
    own = voxel_sizes(can)
    direction = can[:3, :3] / own[None, :]
    sp = own if spacing_mm is None else np.asarray(spacing_mm, dtype=np.float64)
    if shape is None:
        n = np.maximum(1, np.rint(can_shape * own / sp)).astype(int)
    else:
        n = np.asarray(shape, dtype=int)
    c = grid_center(can, can_shape) if center_mm is None else np.asarray(center_mm, dtype=np.float64)
    a = np.eye(4)
    a[:3, :3] = direction * sp[None, :]
    a[:3, 3] = c - a[:3, :3] @ ((n - 1) / 2.0)
    return Grid(tuple(int(v) for v in n), a)


def _sitk_interpolator(interpolation: Interpolation | str):
    import SimpleITK as sitk

    try:
        mode = Interpolation(interpolation)
    except ValueError:
        raise GeometryError(f"unknown interpolation {interpolation!r}; use one of {[m.value for m in Interpolation]}",
                            keyword="interpolation") from None
    return mode, {
        Interpolation.LINEAR: sitk.sitkLinear,
        Interpolation.NEAREST: sitk.sitkNearestNeighbor,
        Interpolation.BSPLINE: sitk.sitkBSpline,
    }[mode]


def affine_transform_sitk(matrix: np.ndarray):
    """A SimpleITK ``AffineTransform`` equal to a 4x4 point mapping (LPS mm -> LPS mm).

    Parameters
    ----------
    matrix : numpy.ndarray
        4x4 matrix mapping LPS points to LPS points, mm (e.g. the fixed -> moving
        matrix of :func:`~medmulti.geometry.register_rigid`).

    Returns
    -------
    SimpleITK.AffineTransform
        3D transform with matrix ``matrix[:3, :3]``, translation
        ``matrix[:3, 3]`` and centre 0, so ``TransformPoint(p)`` equals
        :func:`~medmulti.geometry.apply_affine` ``(matrix, p)``.

    Examples
    --------
    >>> m = np.diag([2.0, 1.0, 1.0, 1.0])
    >>> m[:3, 3] = (1.0, 2.0, 3.0)
    >>> affine_transform_sitk(m).TransformPoint((1.0, 1.0, 1.0))
    (3.0, 3.0, 4.0)
    """
    import SimpleITK as sitk

    m = np.asarray(matrix, dtype=np.float64)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    return tx


#: Sources larger than this (voxels) are resampled in slabs of the output grid, each
#: from just the part of the source it needs, so no full-size copy is ever made.
CHUNK_VOXELS = 8_000_000


def _source_box(image: Image, grid: Grid, transform: np.ndarray | None):
    """Index box ``(lo, hi)`` (inclusive-exclusive) of the source voxels a grid can touch, or None."""
    corners = grid_corners_all(grid)
    world = corners if transform is None else apply_affine(transform, corners)
    idx = apply_affine(np.linalg.inv(image.affine), world)
    lo = np.floor(idx.min(axis=0)).astype(int) - 1
    hi = np.ceil(idx.max(axis=0)).astype(int) + 2
    shape = np.asarray(image.shape)
    lo = np.clip(lo, 0, shape)
    hi = np.clip(hi, 0, shape)
    if np.any(hi <= lo):
        return None
    return lo, hi


def grid_corners_all(grid: Grid) -> np.ndarray:
    """LPS positions of the 8 corner voxel centres of a grid.

    Parameters
    ----------
    grid : Grid
        The grid.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(8, 3)``, LPS mm, in the order of
        :func:`~medmulti.geometry.grid_corners` (``grid_corners(grid.affine,
        grid.shape)``).
    """
    return grid_corners(grid.affine, grid.shape)


def _resample_one(image: Image, grid: Grid, interp, fill: float, out_type, transform) -> np.ndarray:
    import SimpleITK as sitk

    src = as_sitk(image)
    origin, spacing, direction = itk_from_affine(grid.affine)
    tx = sitk.Transform(3, sitk.sitkIdentity) if transform is None else affine_transform_sitk(transform)
    if out_type is None:
        out_type = src.GetPixelID()
    out = sitk.Resample(src, tuple(int(s) for s in reversed(grid.shape)), tx, interp, origin, spacing, direction,
                        fill, out_type)
    return sitk.GetArrayFromImage(out)


def _axis_map(image: Image, grid: Grid, tol: float = 1e-6):
    """For a grid whose axes are each parallel to one source axis: per grid axis the source
    axis, and the affine 1D map grid index -> continuous source index; else ``None``."""
    m = np.linalg.inv(image.affine) @ grid.affine  # grid index -> source index
    a = m[:3, :3]
    axes = []
    for g in range(3):
        col = a[:, g]
        p = int(np.argmax(np.abs(col)))
        if abs(col[p]) < tol or np.any(np.abs(np.delete(col, p)) > tol * max(1.0, abs(col[p]))):
            return None
        axes.append((p, float(col[p]), float(m[p, 3])))
    if sorted(p for p, _, _ in axes) != [0, 1, 2]:
        return None
    return axes


def _linear_weights(n_out: int, step: float, offset: float, n_src: int):
    """ITK's linear-interpolation rule along one axis: inside ``[-0.5, n - 0.5)`` (clamped to the
    edge voxels beyond the first/last centre), else outside."""
    c = offset + step * np.arange(n_out, dtype=np.float64)
    inside = (c >= -0.5) & (c < n_src - 0.5)
    cc = np.clip(c, 0.0, n_src - 1.0)
    i0 = np.floor(cc).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w1 = cc - i0
    return i0, i1, w1, inside


def _resample_separable(image: Image, grid: Grid, axes, fill: float) -> np.ndarray:
    """Trilinear resampling of an axis-aligned grid as three 1D interpolations, plane by plane.

    Written by hand because SimpleITK must first copy the whole source into an ITK
    image (for a 300 x 512 x 512 CT that copy costs as much as the resampling); this
    reads, plane by contiguous source plane, only the rows and columns the output
    needs. Values equal SimpleITK's linear ``Resample`` (same inside/edge rules,
    float64 arithmetic).
    """
    src = image.array
    # grid axis that runs along source axis 0, 1, 2
    g_of = {p: g for g, (p, _, _) in enumerate(axes)}
    (i0, i1, w1, in0), (j0, j1, v1, in1), (k0, k1, u1, in2) = (
        _linear_weights(grid.shape[g_of[p]], axes[g_of[p]][1], axes[g_of[p]][2], src.shape[p]) for p in range(3))
    n0, n1, n2 = len(i0), len(j0), len(k0)
    out = np.full((n0, n1, n2), fill, np.float32)  # in source-axis order
    rows = np.concatenate([j0, j1])
    cols = np.concatenate([k0, k1])
    v1 = v1[:, None]
    for z in np.nonzero(in0)[0]:
        a = src[i0[z]][rows][:, cols].astype(np.float64)
        if w1[z] > 0:
            b = src[i1[z]][rows][:, cols].astype(np.float64)
            a += w1[z] * (b - a)
        plane = a[:n1] + v1 * (a[n1:] - a[:n1])
        out[z] = plane[:, :n2] + u1 * (plane[:, n2:] - plane[:, :n2])
    if not in1.all():
        out[:, ~in1, :] = fill
    if not in2.all():
        out[:, :, ~in2] = fill
    # source-axis order -> grid-axis order
    return np.ascontiguousarray(out.transpose([axes[g][0] for g in range(3)]))


def resample_to(
    image: Image,
    reference: Union[Image, Grid],
    *,
    interpolation: Interpolation | str = Interpolation.LINEAR,
    fill_value: float | None = None,
    transform: np.ndarray | None = None,
    chunk_voxels: int = CHUNK_VOXELS,
    engine: str = "auto",
) -> Image:
    """Resample a 3D image onto the reference's grid through world coordinates.

    Parameters
    ----------
    image : Image
        3D source image with an affine.
    reference : Image or Grid
        The target grid (an Image's own grid, or a :class:`Grid`).
    interpolation : {"linear", "nearest", "bspline"}
        ``"linear"`` for intensities, ``"nearest"`` for label masks.
    fill_value : float, optional
        Value outside the source's field of view; default
        :func:`fill_value_for` ``(image.modality)``.
    transform : numpy.ndarray, optional
        4x4 mapping LPS points of the reference to LPS points of ``image``
        (what :func:`~medmulti.geometry.register_rigid` returns); default identity
        (header alignment).
    chunk_voxels : int
        Sources larger than this are resampled slab by slab of the output grid,
        each slab from the box of source voxels it can touch (plus a one-voxel
        margin, so values are identical to one full resampling). This keeps
        peak memory near the source size instead of twice it (SimpleITK copies
        arrays it is given).
    engine : {"auto", "sitk"}
        ``"auto"`` resamples linear, untransformed, axis-aligned cases (every grid
        axis parallel to a source axis: axial CT or a sagittal MR onto the
        canonical grid) as three separable 1D interpolations in numpy, which
        give SimpleITK's values without copying the source; everything else
        (oblique, registered, nearest, B-spline) and ``"sitk"`` use SimpleITK
        ``Resample``.

    Returns
    -------
    Image
        On the reference grid; float32 for linear/bspline, the source dtype for
        nearest; ``meta`` copied from ``image``.

    Raises
    ------
    GeometryError
        For images without 3D geometry or an unknown interpolation.

    Examples
    --------
    >>> import numpy as np
    >>> src = Image(np.arange(8.0).reshape(2, 2, 2), np.eye(4), (1, 1, 1), "MR")
    >>> resample_to(src, Grid((1, 1, 1), np.eye(4))).array.tolist()
    [[[0.0]]]
    """
    import SimpleITK as sitk

    if image.affine is None or image.ndim != 3:
        raise GeometryError("only 3D images with geometry can be resampled onto a grid", modality=image.modality)
    grid = Grid.of(reference)
    mode, interp = _sitk_interpolator(interpolation)
    fill = fill_value_for(image.modality) if fill_value is None else float(fill_value)
    out_type = None if mode is Interpolation.NEAREST else sitk.sitkFloat32
    if engine not in ("auto", "sitk"):
        raise GeometryError(f"engine must be 'auto' or 'sitk', got {engine!r}", keyword="engine")
    axes = _axis_map(image, grid) if (engine == "auto" and mode is Interpolation.LINEAR and transform is None) else None
    if axes is not None:
        array = _resample_separable(image, grid, axes, fill)
    elif image.array.size <= chunk_voxels:
        array = _resample_one(image, grid, interp, fill, out_type, transform)
    else:
        out_dtype = np.float32 if out_type is not None else image.array.dtype.newbyteorder("=")
        array = np.empty(grid.shape, out_dtype)
        # output slabs along axis 0 sized so the source box each needs stays near chunk_voxels
        per_slice = image.array.size / max(1, grid.shape[0])
        step = int(max(1, min(grid.shape[0], chunk_voxels // max(1.0, per_slice))))
        for z0 in range(0, grid.shape[0], step):
            z1 = min(grid.shape[0], z0 + step)
            shift = np.eye(4)
            shift[0, 3] = z0
            sub = Grid((z1 - z0, grid.shape[1], grid.shape[2]), grid.affine @ shift)
            box = _source_box(image, sub, transform)
            if box is None:
                array[z0:z1] = fill
                continue
            lo, hi = box
            crop = image.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            offset = np.eye(4)
            offset[:3, 3] = lo
            part = Image(crop, image.affine @ offset, image.spacing, image.modality)
            array[z0:z1] = _resample_one(part, sub, interp, fill, out_type, transform)
    return Image(array, grid.affine.copy(), grid.spacing, image.modality, dict(image.meta))


def body_center(image: Image, threshold: float | None = None) -> np.ndarray:
    """LPS centre (mm) of the body's bounding box.

    The body is every voxel above ``threshold`` (default -500 HU for CT, Otsu's
    threshold otherwise); the box keeps array indices whose slab holds at least
    1 % of the largest slab's body voxels, so isolated noise and thin table
    edges do not stretch it. Falls back to the image centre when nothing is
    above the threshold.

    Parameters
    ----------
    image : Image
        3D image with an affine.
    threshold : float, optional
        Body threshold in image units.

    Returns
    -------
    numpy.ndarray
        LPS point, mm.
    """
    if image.affine is None or image.ndim != 3:
        raise GeometryError("body_center needs a 3D image with geometry", modality=image.modality)
    step = max(1, int(round((image.array.size / 2_000_000) ** (1 / 3))))
    a = image.array[::step, ::step, ::step]
    if threshold is None:
        if image.modality.upper() == "CT":
            threshold = -500.0
        else:
            from skimage.filters import threshold_otsu

            threshold = float(threshold_otsu(a)) if a.min() != a.max() else float(a.max())
    mask = a > threshold
    if not mask.any():
        return grid_center(image.affine, image.shape)
    lo, hi = [], []
    for axis in range(3):
        prof = mask.sum(axis=tuple(i for i in range(3) if i != axis))
        keep = np.nonzero(prof >= 0.01 * prof.max())[0]
        lo.append(keep[0] * step)
        hi.append(keep[-1] * step)
    mid = (np.asarray(lo, dtype=np.float64) + np.asarray(hi, dtype=np.float64)) / 2.0
    return apply_affine(image.affine, mid)


def fit_2d(array: np.ndarray, shape: Sequence[int], *, fill_value: float = 0.0) -> tuple[np.ndarray, dict]:
    """Aspect-preserving resize of a 2D image into ``shape``, padded centrally.

    Parameters
    ----------
    array : numpy.ndarray
        2D ``(rows, columns)`` image.
    shape : (rows, columns)
        Output shape.
    fill_value : float
        Padding value.

    Returns
    -------
    out : numpy.ndarray
        float32 of ``shape``.
    info : dict
        ``{"scale": s, "offset": [row, col], "resized": [rows, cols]}``: input
        pixel ``(r, c)`` lands at ``(r * s + offset_r, c * s + offset_c)``
        (pixel-edge convention).

    Notes
    -----
    Resizing uses scikit-image ``transform.resize`` (linear, anti-aliased when
    shrinking).
    """
    from skimage.transform import resize

    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 2:
        raise GeometryError(f"fit_2d expects a 2D image, got {a.ndim}D", keyword="shape")
    rows, cols = (int(v) for v in shape)
    scale = min(rows / a.shape[0], cols / a.shape[1])
    new = (max(1, int(round(a.shape[0] * scale))), max(1, int(round(a.shape[1] * scale))))
    new = (min(new[0], rows), min(new[1], cols))
    small = resize(a, new, order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32)
    out = np.full((rows, cols), fill_value, np.float32)
    r0, c0 = (rows - new[0]) // 2, (cols - new[1]) // 2
    out[r0:r0 + new[0], c0:c0 + new[1]] = small
    return out, {"scale": float(scale), "offset": [int(r0), int(c0)], "resized": [int(new[0]), int(new[1])]}
