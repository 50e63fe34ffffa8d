"""Stored pixel values to output values: modality LUT, MONOCHROME1, VOI metadata.

Small pure functions over ``(ndarray, Dataset)``, in the spirit of
``pydicom.pixels.processing``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CorruptFileError

__all__ = [
    "rescale_of",
    "apply_rescale_into",
    "stored_range",
    "output_range",
    "invert_monochrome1",
    "voi_meta",
]


def _num(value: Any, default: float) -> float:
    vals = _floats(value)
    return vals[0] if vals else default


def rescale_of(ds: Any) -> tuple[float, float]:
    """Return ``(RescaleSlope, RescaleIntercept)`` of a dataset or functional group.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset or a PixelValueTransformation item.

    Returns
    -------
    (float, float)
        Slope (1.0 when absent, empty or zero) and intercept (0.0 when absent).

    Notes
    -----
    PS3.3 C.11.1 (Modality LUT) and C.7.6.16.2.9 (Pixel Value Transformation).
    """
    slope = _num(ds.get("RescaleSlope", None), 1.0)
    intercept = _num(ds.get("RescaleIntercept", None), 0.0)
    if slope == 0.0:
        slope = 1.0
    return slope, intercept


def apply_rescale_into(stored: np.ndarray, out: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Write ``stored * slope + intercept`` into the float32 array ``out`` in place.

    Parameters
    ----------
    stored : numpy.ndarray
        Stored values (any integer or float dtype), same shape as ``out``.
    out : numpy.ndarray
        float32 destination (e.g. one slice of a preallocated volume).
    slope, intercept : float
        Modality LUT linear transform.

    Returns
    -------
    numpy.ndarray
        ``out``.

    Raises
    ------
    CorruptFileError
        If the transform can map a stored value outside the finite float32 range
        (e.g. ``RescaleIntercept = 1e308``), checked before computing.
    """
    kind = stored.dtype.kind
    maxabs = float(max(-int(np.iinfo(stored.dtype).min), int(np.iinfo(stored.dtype).max))) if kind in "iu" \
        else float(np.max(np.abs(stored), initial=0.0))
    bound = abs(float(slope)) * maxabs + abs(float(intercept))
    if not np.isfinite(bound) or bound > float(np.finfo(np.float32).max):
        raise CorruptFileError("RescaleSlope/RescaleIntercept map stored values beyond the float32 range",
                               keyword="RescaleIntercept")
    if slope == 1.0:
        # one pass: int + float32 scalar computes in float32 straight into out
        np.add(stored, np.float32(intercept), out=out, casting="unsafe")
        return out
    np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Return the smallest and largest storable value for BitsStored.

    Parameters
    ----------
    bits_stored : int
        BitsStored (1..32).
    signed : bool
        PixelRepresentation == 1.

    Returns
    -------
    (int, int)
    """
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def output_range(bits_stored: int, signed: bool, slope: float, intercept: float) -> tuple[float, float]:
    """Return the range of modality-LUT output values.

    Parameters
    ----------
    bits_stored : int
        BitsStored.
    signed : bool
        PixelRepresentation == 1.
    slope, intercept : float
        Modality LUT.

    Returns
    -------
    (float, float)
        ``(low, high)`` with ``low <= high``.
    """
    lo, hi = stored_range(bits_stored, signed)
    a, b = lo * slope + intercept, hi * slope + intercept
    return (min(a, b), max(a, b))


def invert_monochrome1(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """Invert MONOCHROME1 values in place so that larger means brighter.

    ``v -> low + high - v``: the value range ``[low, high]`` is kept, the order
    reversed, which is how MONOCHROME1 is displayed (PS3.3 C.7.6.3.1.2).

    Parameters
    ----------
    array : numpy.ndarray
        float32 output values, modified in place.
    low, high : float
        Range of possible output values (see :func:`output_range`).

    Returns
    -------
    numpy.ndarray
        ``array``.
    """
    np.subtract(np.float32(low + high), array, out=array)
    return array


def _floats(value: Any) -> list[float]:
    if value is None or value == "":
        return []
    seq = value if (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))) else [value]
    out = []
    for v in seq:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            out.append(f)
    return out


def voi_meta(ds: Any, *, inverted: bool, low: float, high: float) -> dict[str, Any]:
    """Return the VOI (display) transform of a dataset as JSON-able numbers.

    Parameters
    ----------
    ds : pydicom.Dataset
        The image dataset.
    inverted : bool
        Whether the pixels were inverted by :func:`invert_monochrome1`; the
        window centres and the VOI LUT are then mapped into the inverted domain
        so they apply to the array medmulti returns.
    low, high : float
        Output value range used for the inversion.

    Returns
    -------
    dict
        ``{"window": [{"center": c, "width": w}, ...]}`` when WindowCenter /
        WindowWidth exist and ``{"voi_lut": {"first_mapped": int, "bits": int,
        "data": [int, ...]}}`` for the first VOI LUT Sequence item. Empty dict
        when neither is present. No text values (explanations) are kept.

    Notes
    -----
    PS3.3 C.11.2 (VOI LUT module). For MONOCHROME1, with ``S = low + high``, a
    window centre ``c`` becomes ``S - c``; a LUT ``L`` over ``[f, f + n)`` becomes
    ``L'(y) = 2**bits - 1 - L(S - y)`` over ``[S - f - n + 1, S - f]``.
    """
    out: dict[str, Any] = {}
    centers = _floats(ds.get("WindowCenter", None))
    widths = _floats(ds.get("WindowWidth", None))
    windows = []
    for c, w in zip(centers, widths):
        if w > 0:
            windows.append({"center": (low + high - c) if inverted else c, "width": w})
    if windows:
        out["window"] = windows
    seq = ds.get("VOILUTSequence", None)
    if seq:
        item = seq[0]
        desc = item.get("LUTDescriptor", None)
        lut = item.get("LUTData", None)
        if desc is not None and lut is not None and len(desc) == 3:
            n, first, bits = int(desc[0]) or 65536, int(desc[1]), int(desc[2])
            if isinstance(lut, (bytes, bytearray)):  # OW: 16-bit words in the dataset's byte order
                little = getattr(ds, "original_encoding", (None, True))[1] is not False
                data = np.frombuffer(bytes(lut)[: len(lut) // 2 * 2], dtype="<u2" if little else ">u2").astype(np.int64)
            else:
                data = np.asarray(lut, dtype=np.int64).ravel()
            data = data[:n]
            if inverted:
                top = 2**bits - 1
                data = top - data[::-1]
                first = int(round(low + high)) - first - len(data) + 1
            out["voi_lut"] = {"first_mapped": first, "bits": bits, "data": data.tolist()}
    return out
