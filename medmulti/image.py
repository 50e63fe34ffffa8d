"""The :class:`Image` type: an array, its LPS geometry and non-identifying metadata.

Geometry convention (DESIGN.md): the array and geometry equal what SimpleITK gives
for the same file. ``array`` axes are those of ``sitk.GetArrayFromImage``, so a
volume is ``(slice, row, column) = (z, y, x)``; ``affine`` maps ``(index in array
axis order, 1)`` to LPS millimetres, i.e. ITK's origin/spacing/direction with the
axis order reversed. Projection radiographs (CR, DX, ...) are 2D ``(row, column)``
with ``affine=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import GeometryError

if TYPE_CHECKING:  # pragma: no cover
    import nibabel as nib
    import SimpleITK as sitk

__all__ = ["Image", "affine_from_itk", "itk_from_affine", "LPS_TO_RAS"]

#: Flip of the first two world axes: LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_itk(origin: ArrayLike, spacing: ArrayLike, direction: ArrayLike) -> np.ndarray:
    """Build the array-order affine from ITK geometry.

    Parameters
    ----------
    origin : sequence of float, length 3
        ITK origin (LPS mm) of the first voxel centre.
    spacing : sequence of float, length 3
        ITK spacing in (x, y, z) order, mm.
    direction : sequence of float, length 9
        ITK direction cosines, row-major 3x3 (columns are the x, y, z index axes).

    Returns
    -------
    numpy.ndarray
        4x4 float64 mapping ``(z, y, x, 1)`` array indices to LPS mm.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    s = np.asarray(spacing, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = (d * s[None, :])[:, ::-1]
    m[:3, 3] = np.asarray(origin, dtype=np.float64)
    return m


def itk_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Split an array-order affine into ITK ``(origin, spacing, direction)``.

    Parameters
    ----------
    affine : numpy.ndarray
        4x4 mapping ``(z, y, x, 1)`` to LPS mm.

    Returns
    -------
    tuple
        ``(origin, spacing, direction)`` in ITK's (x, y, z) conventions; direction
        is the row-major flattened 3x3 matrix.
    """
    a = np.asarray(affine, dtype=np.float64)
    m = a[:3, :3][:, ::-1]  # columns now x, y, z index axes
    s = np.linalg.norm(m, axis=0)
    d = m / s[None, :]
    return tuple(a[:3, 3].tolist()), tuple(s.tolist()), tuple(d.ravel().tolist())


@dataclass(eq=False)
class Image:
    """An image in a known space.

    Parameters
    ----------
    array : numpy.ndarray
        3D ``(z, y, x)`` volume or 2D ``(row, column)`` image.
    affine : numpy.ndarray or None
        4x4 float64 mapping ``(index in array axis order, 1)`` to LPS mm; ``None``
        for projection radiographs, whose pixels have no patient-space position.
    spacing : tuple of float
        Pixel/voxel size in mm, in array axis order.
    modality : str
        DICOM Modality (``"CT"``, ``"MR"``, ``"CR"``, ``"DX"``...) or the one given.
    meta : dict
        Non-identifying metadata only (no names, dates of birth, UIDs, accession
        numbers). JSON-serialisable values.

    Examples
    --------
    >>> import numpy as np
    >>> img = Image(np.zeros((4, 5, 6), np.float32), np.eye(4), (1.0, 1.0, 1.0), "CT")
    >>> img.shape
    (4, 5, 6)
    """

    array: np.ndarray
    affine: np.ndarray | None
    spacing: tuple[float, ...]
    modality: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim not in (2, 3):
            raise GeometryError(
                f"an Image array must be 2D or 3D, got {self.array.ndim}D",
                modality=self.modality,
            )
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=np.float64)
            if self.affine.shape != (4, 4):
                raise GeometryError(f"affine must be 4x4, got {self.affine.shape}", modality=self.modality)
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != self.array.ndim:
            raise GeometryError(
                f"spacing has {len(self.spacing)} values for a {self.array.ndim}D array",
                modality=self.modality,
            )

    # -- convenience ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape in array axis order."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of array axes (2 or 3)."""
        return self.array.ndim

    @property
    def origin(self) -> np.ndarray | None:
        """LPS position (mm) of the centre of voxel 0, or ``None`` without geometry."""
        return None if self.affine is None else self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray | None:
        """3x3 unit direction matrix whose columns are the array axes in LPS, or ``None``."""
        if self.affine is None:
            return None
        m = self.affine[:3, :3]
        out: np.ndarray = m / np.linalg.norm(m, axis=0)[None, :]
        return out

    def index_to_world(self, index: ArrayLike) -> np.ndarray:
        """Map array indices (array axis order, shape ``(..., 3)``) to LPS mm.

        Parameters
        ----------
        index : array_like
            Indices in array axis order, last dimension 3.

        Returns
        -------
        numpy.ndarray
            LPS coordinates in mm, same leading shape.

        Raises
        ------
        GeometryError
            If the image has no geometry (projection radiograph).
        """
        if self.affine is None:
            raise GeometryError("this image has no patient-space geometry", modality=self.modality)
        idx = np.asarray(index, dtype=np.float64)
        out: np.ndarray = idx @ self.affine[:3, :3].T + self.affine[:3, 3]
        return out

    def world_to_index(self, points: ArrayLike) -> np.ndarray:
        """Map LPS points (mm, shape ``(..., 3)``) to continuous array indices.

        Parameters
        ----------
        points : array_like
            LPS coordinates in mm, last dimension 3.

        Returns
        -------
        numpy.ndarray
            Continuous indices in array axis order.

        Raises
        ------
        GeometryError
            If the image has no geometry.
        """
        if self.affine is None:
            raise GeometryError("this image has no patient-space geometry", modality=self.modality)
        inv = np.linalg.inv(self.affine)
        p = np.asarray(points, dtype=np.float64)
        out: np.ndarray = p @ inv[:3, :3].T + inv[:3, 3]
        return out

    def copy(self, **changes: Any) -> "Image":
        """Return a copy with some fields replaced (arrays are copied unless replaced)."""
        fields: dict[str, Any] = {
            "array": self.array.copy(),
            "affine": None if self.affine is None else self.affine.copy(),
            "spacing": self.spacing,
            "modality": self.modality,
            "meta": dict(self.meta),
        }
        fields.update(changes)
        return Image(**fields)

    # -- SimpleITK -----------------------------------------------------------
    def to_sitk(self) -> "sitk.Image":
        """Convert to a SimpleITK image with the same geometry.

        Returns
        -------
        SimpleITK.Image
            3D images carry origin/spacing/direction from ``affine``; 2D images
            (projection radiographs) carry only spacing.
        """
        import SimpleITK as sitk

        arr = np.ascontiguousarray(self.array)
        if not arr.dtype.isnative:  # e.g. nibabel's big-endian files
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if arr.dtype == np.float16:  # SimpleITK has no half floats
            arr = arr.astype(np.float32)
        out = sitk.GetImageFromArray(arr)
        if self.array.ndim == 3 and self.affine is not None:
            origin, spacing, direction = itk_from_affine(self.affine)
            out.SetOrigin(origin)
            out.SetSpacing(spacing)
            out.SetDirection(direction)
        else:
            out.SetSpacing(tuple(reversed(self.spacing)))
        return out

    @classmethod
    def from_sitk(cls, image: "sitk.Image", modality: str = "OT", meta: dict[str, Any] | None = None) -> "Image":
        """Build an :class:`Image` from a SimpleITK image.

        Parameters
        ----------
        image : SimpleITK.Image
            A 2D or 3D scalar image.
        modality : str
            Modality to record.
        meta : dict, optional
            Non-identifying metadata.

        Returns
        -------
        Image
            3D images get an affine; 2D images get ``affine=None``.
        """
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image)
        spacing = tuple(reversed(image.GetSpacing()))
        affine = None
        if image.GetDimension() == 3:
            affine = affine_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
        return cls(array, affine, spacing, modality, dict(meta or {}))

    # -- nibabel -------------------------------------------------------------
    def to_nifti(self) -> "nib.Nifti1Image":
        """Convert a 3D image to a nibabel NIfTI-1 image (RAS affine, x-fastest axes).

        Returns
        -------
        nibabel.Nifti1Image
            Data axes ``(x, y, z)`` (the transpose of ``array``), RAS+ affine as
            both qform and sform (code 1, scanner).

        Raises
        ------
        GeometryError
            For 2D images without geometry.
        """
        import nibabel as nib

        if self.affine is None or self.array.ndim != 3:
            raise GeometryError("only 3D images with geometry convert to NIfTI", modality=self.modality)
        perm = np.zeros((4, 4))
        perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # (i,j,k) -> (z,y,x)=(k,j,i)
        ras = LPS_TO_RAS @ self.affine @ perm
        out = nib.Nifti1Image(np.ascontiguousarray(self.array.transpose(2, 1, 0)), ras)
        out.set_qform(ras, code=1)
        out.set_sform(ras, code=1)
        return out

    @classmethod
    def from_nifti(cls, image: "nib.Nifti1Image", modality: str = "OT", meta: dict[str, Any] | None = None) -> "Image":
        """Build an :class:`Image` from a 3D nibabel image.

        Parameters
        ----------
        image : nibabel.Nifti1Image or nibabel.Nifti2Image
            3D image; its ``affine`` (RAS) is converted to LPS.
        modality : str
            Modality to record.
        meta : dict, optional
            Non-identifying metadata.

        Returns
        -------
        Image
            ``array`` is the data transposed to ``(z, y, x)``; values scaled by
            ``scl_slope``/``scl_inter`` as nibabel does.

        Raises
        ------
        GeometryError
            If the image is not 3D.
        """
        data = np.asanyarray(image.dataobj)
        if data.ndim != 3:
            raise GeometryError(f"from_nifti expects a 3D image, got {data.ndim}D", modality=modality)
        ras = np.asarray(image.affine, dtype=np.float64)
        perm = np.zeros((4, 4))
        perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0
        affine = LPS_TO_RAS @ ras @ perm
        spacing = tuple(np.linalg.norm(affine[:3, :3], axis=0).tolist())
        return cls(np.ascontiguousarray(data.transpose(2, 1, 0)), affine, spacing, modality, dict(meta or {}))
