"""Seeded augmentation that keeps co-registered modalities aligned.

One random spatial transform (flip, small rotation, isotropic scale, shift) is
drawn per patient and applied identically to every 3D modality, so volumes that
share the reference grid stay voxel-aligned; each 2D X-ray gets its own
transform; each modality gets its own intensity change (gain, bias, Gaussian
noise). The transform is defined in millimetres about the centre of the grid and
converted to each array's index space with its spacing, so modalities stored on
grids of different resolution but the same field of view also stay aligned.

Resampling uses :func:`scipy.ndimage.affine_transform` (linear, edge values
extended), a well-tested routine; the matrices are built here because the
transform must be shared across modalities and converted per grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["Augmenter", "SpatialTransform"]


@dataclass(frozen=True)
class SpatialTransform:
    """A forward transform ``y = A @ x + t`` in mm about the grid centre.

    Attributes
    ----------
    linear : numpy.ndarray
        ``(d, d)`` matrix (flip, rotation and scale), array axis order.
    shift_mm : numpy.ndarray
        ``(d,)`` translation in mm, array axis order.
    """

    linear: np.ndarray
    shift_mm: np.ndarray

    def index_mapping(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(matrix, offset)`` mapping output indices to input indices.

        Parameters
        ----------
        shape : sequence of int
            Spatial shape of the array.
        spacing : sequence of float
            Voxel spacing in mm, array axis order.

        Returns
        -------
        tuple of numpy.ndarray
            As :func:`scipy.ndimage.affine_transform` takes them.
        """
        d = np.diag(np.asarray(spacing, np.float64))
        dinv = np.linalg.inv(d)
        ainv = np.linalg.inv(self.linear)
        matrix = dinv @ ainv @ d
        centre = (np.asarray(shape, np.float64) - 1.0) / 2.0
        offset = centre - matrix @ centre - dinv @ ainv @ self.shift_mm
        return matrix, offset


def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation matrix from one angle (2D) or three angles about the array axes (3D)."""
    if len(angles_rad) == 1:
        c, s = np.cos(angles_rad[0]), np.sin(angles_rad[0])
        return np.array([[c, -s], [s, c]])
    out = np.eye(3)
    for axis, a in enumerate(angles_rad):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


@dataclass(frozen=True)
class Augmenter:
    """Random spatial and intensity augmentation, seeded by the caller's generator.

    Parameters
    ----------
    rotation_deg : float
        Maximum absolute rotation about each axis, degrees.
    scale : tuple of float
        Range of the isotropic scale factor.
    shift_fraction : float
        Maximum absolute shift per axis, as a fraction of the grid extent.
    flip_axes_3d : tuple of int
        Array axes of 3D volumes that may be flipped (each with probability 0.5).
        The default flips the last axis (x, left-right in LPS order).
    flip_axes_2d : tuple of int
        The same for 2D images (none by default: radiographs have a handedness).
    rotation_deg_2d : float
        Maximum rotation of 2D images, degrees.
    gain : tuple of float
        Range of the multiplicative intensity factor, per modality.
    bias : float
        Maximum absolute additive intensity offset, per modality.
    noise_std : float
        Standard deviation of additive Gaussian noise (0 disables it).
    """

    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift_fraction: float = 0.05
    flip_axes_3d: tuple[int, ...] = (2,)
    flip_axes_2d: tuple[int, ...] = ()
    rotation_deg_2d: float = 5.0
    gain: tuple[float, float] = (0.9, 1.1)
    bias: float = 0.05
    noise_std: float = 0.01

    def sample_spatial(self, rng: np.random.Generator, shape: Sequence[int],
                       spacing: Sequence[float]) -> SpatialTransform:
        """Draw one spatial transform for a grid.

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness (seeded by the caller).
        shape : sequence of int
            Spatial shape (2 or 3 axes).
        spacing : sequence of float
            Spacing in mm (its extent scales the shift).

        Returns
        -------
        SpatialTransform
        """
        ndim = len(shape)
        if ndim == 3:
            angles = np.deg2rad(rng.uniform(-self.rotation_deg, self.rotation_deg, size=3))
            flips = self.flip_axes_3d
        else:
            angles = np.deg2rad(rng.uniform(-self.rotation_deg_2d, self.rotation_deg_2d, size=1))
            flips = self.flip_axes_2d
        flip = np.ones(ndim)
        for ax in flips:
            if rng.random() < 0.5:
                flip[ax] = -1.0
        s = rng.uniform(*self.scale)
        linear = np.diag(flip) @ _rotation(angles) * s
        extent = np.asarray(shape, np.float64) * np.asarray(spacing, np.float64)
        shift = rng.uniform(-self.shift_fraction, self.shift_fraction, size=ndim) * extent
        return SpatialTransform(linear, shift)

    @staticmethod
    def warp(array: np.ndarray, transform: SpatialTransform, spacing: Sequence[float]) -> None:
        """Apply ``transform`` to a channels-last array in place (linear interpolation).

        Parameters
        ----------
        array : numpy.ndarray
            float32 ``(*spatial, channels)``; overwritten.
        transform : SpatialTransform
            From :meth:`sample_spatial`.
        spacing : sequence of float
            The array's spacing in mm.
        """
        from scipy import ndimage

        spatial = array.shape[:-1]
        matrix, offset = transform.index_mapping(spatial, spacing)
        for c in range(array.shape[-1]):
            src = np.array(array[..., c], copy=True)
            array[..., c] = ndimage.affine_transform(src, matrix, offset=offset, order=1, mode="nearest",
                                                     output=np.float32)

    def augment_intensity(self, array: np.ndarray, rng: np.random.Generator) -> None:
        """Apply gain, bias and noise to one modality in place.

        Parameters
        ----------
        array : numpy.ndarray
            float32, overwritten.
        rng : numpy.random.Generator
            The source of randomness.
        """
        g = rng.uniform(*self.gain)
        b = rng.uniform(-self.bias, self.bias)
        array *= np.float32(g)
        array += np.float32(b)
        if self.noise_std > 0:
            array += rng.normal(0.0, self.noise_std, size=array.shape).astype(np.float32)

    def __call__(self, arrays: Mapping[str, np.ndarray], spacings: Mapping[str, Sequence[float]],
                 rng: np.random.Generator, *, reference: str | None = None) -> None:
        """Augment one patient's modalities in place.

        Parameters
        ----------
        arrays : Mapping[str, numpy.ndarray]
            Modality name -> float32 ``(*spatial, channels)`` (present modalities
            only; absent ones stay zeros). 4D arrays are 3D volumes, 3D arrays 2D images.
        spacings : Mapping[str, sequence of float]
            Modality name -> spacing in mm (missing: 1 mm).
        rng : numpy.random.Generator
            Seeded per patient and epoch by the caller.
        reference : str, optional
            The 3D modality whose grid the shared 3D transform is drawn for
            (default: the first 3D one).
        """
        names = list(arrays)
        three_d = [n for n in names if arrays[n].ndim == 4]
        spacing_of = {n: tuple(spacings.get(n) or (1.0,) * (arrays[n].ndim - 1)) for n in names}
        if three_d:
            ref = reference if reference in three_d else three_d[0]
            shared = self.sample_spatial(rng, arrays[ref].shape[:-1], spacing_of[ref])
            for n in three_d:
                self.warp(arrays[n], shared, spacing_of[n])
        for n in names:
            if arrays[n].ndim == 3:
                self.warp(arrays[n], self.sample_spatial(rng, arrays[n].shape[:-1], spacing_of[n]), spacing_of[n])
        for n in names:
            self.augment_intensity(arrays[n], rng)
