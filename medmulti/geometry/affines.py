"""Short pure functions on 4x4 affines (array-order index -> LPS mm).

Applying an affine and reading voxel sizes are nibabel's public functions
(:func:`nibabel.affines.apply_affine`, :func:`nibabel.affines.voxel_sizes`,
:func:`nibabel.affines.from_matvec`); the wrappers here only fix the dtype
(float64 always, whatever the input's) and accept array-likes. nibabel is
imported inside the functions, so importing :mod:`medmulti.geometry` stays
light (nibabel, like SimpleITK, loads on first use).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "apply_affine",
    "grid_center",
    "grid_corners",
    "rigid_matrix",
    "rotation_angle_deg",
    "voxel_sizes",
]


def apply_affine(affine: np.ndarray, points) -> np.ndarray:
    """Apply a 4x4 affine to points of shape ``(..., 3)``.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 homogeneous matrix.
    points : array_like
        Coordinates, last dimension 3.

    Returns
    -------
    numpy.ndarray
        float64 transformed coordinates, same shape.

    Notes
    -----
    :func:`nibabel.affines.apply_affine` on float64 copies of both inputs: its
    result keeps the input dtype (integer points and affine give integers), ours
    is always float64.

    Examples
    --------
    >>> apply_affine(np.diag([2.0, 2.0, 2.0, 1.0]), [1, 2, 3]).tolist()
    [2.0, 4.0, 6.0]
    """
    from nibabel.affines import apply_affine as nib_apply_affine

    return nib_apply_affine(np.asarray(affine, dtype=np.float64), np.asarray(points, dtype=np.float64))


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel size along each array axis, in mm.

    The size along array axis ``i`` is the Euclidean norm of column ``i`` of the
    affine's 3x3 part: the world distance of one index step along that axis.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine (only ``affine[:3, :3]`` is used).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(3,)``: voxel sizes in array axis order ``(z, y, x)``, mm.

    Notes
    -----
    :func:`nibabel.affines.voxel_sizes` on a float64 copy: nibabel's keeps a
    float32 affine's dtype and needs an array, not a nested list.

    Examples
    --------
    >>> voxel_sizes(np.diag([2.0, 0.5, 0.5, 1.0])).tolist()
    [2.0, 0.5, 0.5]
    """
    from nibabel.affines import voxel_sizes as nib_voxel_sizes

    return nib_voxel_sizes(np.asarray(affine, dtype=np.float64))


def rigid_matrix(rotation_rad: Sequence[float] = (0.0, 0.0, 0.0), translation_mm: Sequence[float] = (0.0, 0.0, 0.0),
                 center_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Build a rigid 4x4 from Euler angles about x, y, z (ITK ``Euler3DTransform`` order).

    Parameters
    ----------
    rotation_rad : (rx, ry, rz)
        Angles in radians about the world x, y, z axes; the rotation matrix is
        ``Rz @ Rx @ Ry`` as in ITK's Euler3DTransform (ZXY convention).
    translation_mm : (tx, ty, tz)
        Translation in mm.
    center_mm : (cx, cy, cz)
        Centre of rotation in mm.

    Returns
    -------
    numpy.ndarray
        4x4 float64 mapping ``p`` to ``R (p - c) + c + t``.
    """
    rx, ry, rz = (float(v) for v in rotation_rad)
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    from nibabel.affines import from_matvec

    R = Rz @ Rx @ Ry
    c = np.asarray(center_mm, dtype=np.float64)
    return from_matvec(R, c + np.asarray(translation_mm, dtype=np.float64) - R @ c)


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Angle (degrees) of the rotation part of a rigid 3x3 or 4x4 matrix.

    The angle of the axis-angle form, ``arccos((trace(R) - 1) / 2)``, with the
    cosine clipped to ``[-1, 1]`` so rounding errors cannot give NaN.

    Parameters
    ----------
    matrix : numpy.ndarray
        3x3 rotation or 4x4 rigid matrix; only ``matrix[:3, :3]`` is used. It is
        assumed to be a rotation (not checked): a matrix with scaling or shear
        gives a meaningless angle.

    Returns
    -------
    float
        Rotation angle in degrees, in ``[0, 180]``; the translation is ignored.

    Examples
    --------
    >>> round(rotation_angle_deg(rigid_matrix((0, 0, np.pi / 6))), 6)
    30.0
    """
    R = np.asarray(matrix, dtype=np.float64)[:3, :3]
    cos = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def grid_center(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """LPS position (mm) of the centre of a grid (midpoint of the corner voxel centres).

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine of the grid.
    shape : sequence of int
        Grid shape ``(z, y, x)`` (three entries).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(3,)``: the affine applied to the continuous index
        ``(shape - 1) / 2``, LPS mm.

    Examples
    --------
    >>> grid_center(np.eye(4), (3, 5, 7)).tolist()
    [1.0, 2.0, 3.0]
    """
    return apply_affine(affine, (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0)


def grid_corners(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """LPS positions (mm) of the 8 corner voxel centres of a 3D grid.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 array-order LPS affine of the grid.
    shape : sequence of int
        Grid shape ``(z, y, x)`` (three entries).

    Returns
    -------
    numpy.ndarray
        float64, shape ``(8, 3)``, LPS mm: the corner indices ``(i, j, k)`` with
        each of ``i``, ``j``, ``k`` either 0 or ``shape - 1``, in the order
        ``(0, 0, 0), (0, 0, nx-1), (0, ny-1, 0), ..., (nz-1, ny-1, nx-1)``
        (``i`` varies slowest, ``k`` fastest). These are voxel centres, not the
        outer edges of the voxels.

    Examples
    --------
    >>> grid_corners(np.eye(4), (2, 3, 4))[[0, 1, 7]].tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 2.0, 3.0]]
    """
    n = np.asarray(shape, dtype=np.float64) - 1.0
    idx = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    return apply_affine(affine, idx)
