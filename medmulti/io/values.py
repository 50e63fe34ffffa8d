"""Stored pixel values to output values: modality LUT, MONOCHROME1, VOI metadata.

Small pure functions over ``(ndarray, Dataset)``, in the spirit of
``pydicom.pixels.processing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptFileError, UnsupportedDataError

__all__ = [
    "rescale_of",
    "apply_rescale_into",
    "ModalityLut",
    "modality_lut_of",
    "modality_lut_refused",
    "apply_modality_lut_into",
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

    Raises
    ------
    UnsupportedDataError
        If ``ds`` holds a Modality LUT Sequence instead (keyword
        ``ModalityLUTSequence``): its stored values are not meant to be read
        through a slope and intercept, and a caller that only knows those must
        not return them unconverted (:func:`modality_lut_of` reads the table).

    Notes
    -----
    PS3.3 C.11.1 (Modality LUT) and C.7.6.16.2.9 (Pixel Value Transformation).
    """
    if ds.get("ModalityLUTSequence", None):
        raise modality_lut_refused()
    slope = _num(ds.get("RescaleSlope", None), 1.0)
    intercept = _num(ds.get("RescaleIntercept", None), 0.0)
    if slope == 0.0:
        slope = 1.0
    return slope, intercept


def modality_lut_refused(name: str | None = None) -> UnsupportedDataError:
    """The error of a reader that meets a Modality LUT Sequence where it applies only a slope and intercept.

    Parameters
    ----------
    name : str, optional
        File named in the message.

    Returns
    -------
    UnsupportedDataError
        Keyword ``ModalityLUTSequence``, with a hint (no header value).
    """
    return UnsupportedDataError(
        "this image holds a Modality LUT Sequence, which medmulti applies to single-file images only "
        "(series and enhanced multi-frame objects are converted by RescaleSlope/RescaleIntercept)",
        path=name,
        keyword="ModalityLUTSequence",
        hint="read each file on its own, or convert the values first (pydicom's apply_modality_lut)",
    )


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
        # a plain cast, then the float32 addition in place: the same values as
        # np.add(stored, float32) (int -> float32, then + in float32), a quarter faster
        # for a slice that stays in the CPU caches
        np.copyto(out, stored, casting="unsafe")
        if intercept != 0.0:
            np.add(out, np.float32(intercept), out=out)
        return out
    np.multiply(stored, np.float32(slope), out=out, casting="unsafe")
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


@dataclass(frozen=True)
class ModalityLut:
    """A Modality LUT (the first item of a Modality LUT Sequence) as numbers.

    Attributes
    ----------
    first_mapped : int
        The stored value mapped to the first entry (LUTDescriptor's second value).
    bits : int
        Bits per entry (LUTDescriptor's third value, 8 to 16).
    data : numpy.ndarray
        The entries (LUTData), int64, as many as LUTDescriptor's first value
        declares (0 meaning 65536).
    """

    first_mapped: int
    bits: int
    data: np.ndarray

    @property
    def output_range(self) -> tuple[float, float]:
        """``(low, high)``: the smallest and largest value the table maps any stored value to."""
        return float(self.data.min()), float(self.data.max())


def modality_lut_of(ds: Any, *, little_endian: bool = True, signed: bool = False,
                    name: str | None = None) -> ModalityLut | None:
    """Return the Modality LUT of a dataset, or None when it has no Modality LUT Sequence.

    Parameters
    ----------
    ds : pydicom.Dataset
        The image dataset (its top level).
    little_endian : bool
        Byte order of the dataset, for LUTData stored as OW.
    signed : bool
        PixelRepresentation == 1: a first mapped value read as unsigned 32768 or
        more is then the signed value it encodes (LUTDescriptor is "US or SS").
    name : str, optional
        File named in errors.

    Returns
    -------
    ModalityLut or None
        None when the sequence is absent or empty (the Rescale attributes then
        apply, as in pydicom's ``apply_modality_lut``).

    Raises
    ------
    CorruptFileError
        A LUTDescriptor that is not three numbers, bits per entry outside 8..16,
        LUTData missing, shorter than the descriptor declares, or holding an
        entry beyond the declared bits (keyword ``LUTDescriptor`` / ``LUTData``).

    Notes
    -----
    PS3.3 C.11.1 and C.11.1.1.1: LUTDescriptor is (number of entries, first
    stored value mapped, bits per entry); only the first item is used, as the
    standard allows one. LUTData stored as OW with 8 bits per entry holds either
    one 16-bit word per entry (what pydicom reads) or, when the value is too
    short for that, two entries per word (8 bits allocated, as the standard
    describes). Entries beyond the declared number are ignored.
    """
    seq = ds.get("ModalityLUTSequence", None)
    if not seq:
        return None
    item = seq[0]

    def bad(message: str, keyword: str) -> CorruptFileError:
        return CorruptFileError(message, path=name, keyword=keyword)

    desc = item.get("LUTDescriptor", None)
    try:
        values = [int(v) for v in desc] if desc is not None and not isinstance(desc, (str, bytes)) else []
    except (TypeError, ValueError):
        values = []
    if len(values) != 3:
        raise bad("the Modality LUT's LUTDescriptor must hold three numbers", "LUTDescriptor")
    n, first, bits = values[0] or 65536, values[1], values[2]
    if not 0 < n <= 65536 or not 8 <= bits <= 16:
        raise bad("the Modality LUT's LUTDescriptor declares an impossible size or bits per entry (8 to 16)",
                  "LUTDescriptor")
    if signed and first >= 2**15:
        first -= 2**16
    if "LUTData" not in item:
        raise bad("the Modality LUT has no LUTData", "LUTData")
    elem = item["LUTData"]
    raw = elem.value
    if isinstance(raw, (bytes, bytearray)):
        order = "<" if little_endian else ">"
        if len(raw) >= 2 * n or bits > 8:
            data = np.frombuffer(bytes(raw)[: len(raw) // 2 * 2], dtype=order + "u2").astype(np.int64)
        else:  # 8-bit entries, two per word
            data = np.frombuffer(bytes(raw), dtype=np.uint8).astype(np.int64)
    elif raw is None:
        data = np.zeros(0, np.int64)
    else:
        try:
            data = np.asarray([int(v) for v in (raw if hasattr(raw, "__iter__") else [raw])], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise bad("the Modality LUT's LUTData holds values that are not numbers", "LUTData") from None
    if len(data) < n:
        raise bad("the Modality LUT's LUTData holds fewer entries than its LUTDescriptor declares", "LUTData")
    data = data[:n]
    if data.min() < 0 or data.max() > 2**bits - 1:
        raise bad("the Modality LUT's LUTData holds entries beyond the bits per entry its LUTDescriptor declares",
                  "LUTData")
    return ModalityLut(first, bits, data)


def apply_modality_lut_into(stored: np.ndarray, out: np.ndarray, lut: ModalityLut) -> np.ndarray:
    """Write the Modality LUT's output for ``stored`` into the float32 array ``out``.

    Parameters
    ----------
    stored : numpy.ndarray
        Stored values (integers), same shape as ``out``.
    out : numpy.ndarray
        float32 destination.
    lut : ModalityLut
        The table (:func:`modality_lut_of`).

    Returns
    -------
    numpy.ndarray
        ``out``: stored values below the first mapped value take the first
        entry, those beyond the last mapped value the last entry, as pydicom's
        ``apply_modality_lut`` does.

    Notes
    -----
    PS3.3 C.11.1.1.1.

    Examples
    --------
    >>> lut = ModalityLut(first_mapped=2, bits=16, data=np.array([10, 20, 30]))
    >>> apply_modality_lut_into(np.array([0, 2, 3, 4, 9]), np.empty(5, np.float32), lut)
    array([10., 10., 20., 30., 30.], dtype=float32)
    """
    wide = np.int64 if stored.dtype.itemsize >= 4 else np.int32
    idx = np.subtract(stored, lut.first_mapped, dtype=wide)
    np.clip(idx, 0, len(lut.data) - 1, out=idx)
    out[...] = lut.data[idx]
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
