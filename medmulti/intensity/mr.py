"""MR intensity normalisation.

MR values have no absolute scale, so each volume is normalised on its own:
percentile clipping then scaling to ``[0, 1]``, or a z-score over the foreground
(Otsu's threshold, scikit-image). An optional N4 bias-field correction
(SimpleITK) removes the slow intensity drift of receive coils first.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Sequence

import numpy as np

from ..errors import SpecError

__all__ = ["MRMethod", "foreground_mask", "normalize_percentile", "normalize_zscore", "correct_bias_n4", "normalize_mr"]

log = logging.getLogger("medmulti.intensity.mr")

#: Arrays larger than this are subsampled (regular stride) for percentiles and Otsu.
_STATS_MAX_VOXELS = 2_000_000


class MRMethod(str, Enum):
    """MR normalisation methods (spec key ``intensity.method``)."""

    PERCENTILE = "percentile"
    ZSCORE = "zscore"


def _sample(values: np.ndarray) -> np.ndarray:
    """Regularly strided subsample of at most ``_STATS_MAX_VOXELS`` values (deterministic)."""
    flat = np.asarray(values).reshape(-1)
    step = max(1, int(np.ceil(flat.size / _STATS_MAX_VOXELS)))
    return flat[::step]


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """Foreground by Otsu's threshold (scikit-image ``threshold_otsu``).

    Parameters
    ----------
    array : numpy.ndarray
        MR values, any shape.

    Returns
    -------
    numpy.ndarray
        bool, same shape; all ``True`` when the image is constant.
    """
    from skimage.filters import threshold_otsu

    a = np.asarray(array)
    sample = _sample(a)
    if sample.size == 0 or float(sample.min()) == float(sample.max()):
        return np.ones(a.shape, bool)
    return a > threshold_otsu(sample)


def normalize_percentile(
    array: np.ndarray,
    percentiles: Sequence[float] = (1.0, 99.0),
    *,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Clip to two percentiles and scale linearly onto ``[0, 1]``.

    Parameters
    ----------
    array : numpy.ndarray
        Values to normalise, any shape.
    percentiles : (low, high)
        Percentiles in ``[0, 100]``, ``low < high``.
    reference : numpy.ndarray, optional
        Values the percentiles are computed from (default ``array``); pass the
        original volume when ``array`` is a resampled copy padded with fill
        values, so the padding does not move the percentiles.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``array``, in ``[0, 1]`` (all zeros when the
        percentiles coincide).

    Raises
    ------
    SpecError
        Percentiles out of range or not increasing.

    Examples
    --------
    >>> normalize_percentile(np.arange(101.0), (10, 90))[[0, 50, 100]].tolist()
    [0.0, 0.5, 1.0]
    """
    lo_p, hi_p = _check_percentiles(percentiles)
    src = _sample(array if reference is None else reference)
    lo, hi = (float(v) for v in np.percentile(src, [lo_p, hi_p]))
    x = np.asarray(array, dtype=np.float32)
    if hi <= lo:
        return np.zeros(x.shape, np.float32)
    out = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def normalize_zscore(array: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation of the foreground.

    Parameters
    ----------
    array : numpy.ndarray
        MR values.
    mask : numpy.ndarray of bool, optional
        Voxels the statistics come from; default :func:`foreground_mask`.

    Returns
    -------
    numpy.ndarray
        float32, same shape; foreground has mean 0 and standard deviation 1.
        Not bounded to ``[0, 1]``.
    """
    x = np.asarray(array, dtype=np.float32)
    m = foreground_mask(x) if mask is None else np.asarray(mask, bool)
    fg = x[m] if m.any() else x.reshape(-1)
    mean = float(fg.mean(dtype=np.float64))
    std = float(fg.std(dtype=np.float64))
    if std == 0.0:
        return (x - np.float32(mean)).astype(np.float32)
    return ((x - np.float32(mean)) * np.float32(1.0 / std)).astype(np.float32)


def correct_bias_n4(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 50),
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """N4 bias-field correction (SimpleITK ``N4BiasFieldCorrectionImageFilter``).

    The field is estimated on a copy shrunk by ``shrink`` and applied at full
    resolution (the usual speed-up; the field is smooth).

    Parameters
    ----------
    array : numpy.ndarray
        3D ``(z, y, x)`` MR values (positive).
    spacing : sequence of float
        Voxel size in array order, mm.
    shrink : int
        Shrink factor for the estimation.
    iterations : sequence of int
        Maximum iterations per fitting level.
    mask : numpy.ndarray of bool, optional
        Voxels used for the fit; default Otsu foreground.

    Returns
    -------
    numpy.ndarray
        float32 corrected values, same shape.
    """
    import SimpleITK as sitk

    x = np.asarray(array, dtype=np.float32)
    m = foreground_mask(x) if mask is None else np.asarray(mask, bool)
    img = sitk.GetImageFromArray(np.maximum(x, 0) + np.float32(1e-3))
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    msk = sitk.GetImageFromArray(m.astype(np.uint8))
    msk.CopyInformation(img)
    small = sitk.Shrink(img, [shrink] * img.GetDimension())
    small_mask = sitk.Shrink(msk, [shrink] * img.GetDimension())
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(img)
    corrected = sitk.GetArrayFromImage(img) / np.exp(sitk.GetArrayFromImage(log_field))
    return corrected.astype(np.float32)


def _check_percentiles(percentiles: Sequence[float]) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in percentiles)
    except (TypeError, ValueError):
        raise SpecError(f"percentiles must be two numbers [low, high], got {percentiles!r}",
                        keyword="percentiles") from None
    if not (0.0 <= lo < hi <= 100.0):
        raise SpecError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}",
                        keyword="percentiles")
    return lo, hi


def normalize_mr(
    array: np.ndarray,
    method: MRMethod | str = MRMethod.PERCENTILE,
    *,
    percentiles: Sequence[float] = (1.0, 99.0),
    reference: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise MR values by the method a spec names.

    Parameters
    ----------
    array : numpy.ndarray
        MR values.
    method : {"percentile", "zscore"}
        See :func:`normalize_percentile` and :func:`normalize_zscore`.
    percentiles : (low, high)
        For ``"percentile"``.
    reference : numpy.ndarray, optional
        For ``"percentile"``: values the percentiles come from.
    mask : numpy.ndarray of bool, optional
        For ``"zscore"``: the foreground.

    Returns
    -------
    numpy.ndarray
        float32, same shape.

    Raises
    ------
    SpecError
        An unknown method or bad percentiles.
    """
    try:
        m = MRMethod(method)
    except ValueError:
        raise SpecError(f"unknown MR method {method!r}; use one of {[v.value for v in MRMethod]}",
                        keyword="method") from None
    if m is MRMethod.PERCENTILE:
        return normalize_percentile(array, percentiles, reference=reference)
    return normalize_zscore(array, mask)
