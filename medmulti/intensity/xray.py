"""Projection radiograph (CR/DX) intensity normalisation to ``[0, 1]``.

The header's VOI transform is applied when there is one, with pydicom's
``apply_voi_lut`` semantics (a VOI LUT Sequence wins over a window; PS3.3
C.11.2); otherwise the image is clipped to percentiles. MONOCHROME1 images
(larger values darker, PS3.3 C.7.6.3.1.2) are inverted afterwards so that
brighter always means more attenuation. An optional CLAHE (scikit-image
``equalize_adapthist``) evens out contrast.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import SpecError, UnsupportedDataError
from .mr import normalize_percentile
from .windows import apply_window

__all__ = ["XrayMethod", "voi_from_meta", "apply_lut", "normalize_xray"]


class XrayMethod(str, Enum):
    """X-ray normalisation methods (spec key ``intensity.method``)."""

    VOI = "voi"
    PERCENTILE = "percentile"


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        return value[0] if len(value) else None
    return value


def voi_from_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the VOI attributes out of an ``Image.meta`` dict or a pydicom Dataset.

    Parameters
    ----------
    meta : Mapping
        Either what :func:`medmulti.io.read_image` records for radiographs
        (``"window": [{"center", "width"}, ...]``, ``"voi_lut": {"first_mapped",
        "bits", "data"}``, ``"photometric"``, ``"inverted"``: MONOCHROME1 pixels
        and their VOI already inverted by the reader), or DICOM keywords
        (``WindowCenter``, ``WindowWidth``, ``VOILUTFunction``,
        ``PhotometricInterpretation``), as in a pydicom ``Dataset``.
        Multi-valued windows use the first (the default view, PS3.3 C.11.2).

    Returns
    -------
    dict
        ``{"window": (center, width) or None, "function": str,
        "photometric": str, "lut": dict or None}``; ``photometric`` is
        ``"MONOCHROME2"`` when the reader already inverted the pixels.
    """
    window = None
    lut = None
    if isinstance(meta.get("window"), (list, tuple)) and meta.get("window"):
        first = meta["window"][0]
        window = (float(first["center"]), float(first["width"]))
    elif "WindowCenter" in meta and "WindowWidth" in meta:
        center = _first(meta.get("WindowCenter"))
        width = _first(meta.get("WindowWidth"))
        if center is not None and width is not None:
            window = (float(center), float(width))
    if isinstance(meta.get("voi_lut"), Mapping):
        lut = dict(meta["voi_lut"])
    function = str(meta.get("VOILUTFunction") or meta.get("voi_function") or "LINEAR").strip().lower()
    photometric = str(meta.get("PhotometricInterpretation") or meta.get("photometric") or "MONOCHROME2").strip().upper()
    if meta.get("inverted") is True:
        photometric = "MONOCHROME2"
    return {"window": window, "function": function, "photometric": photometric, "lut": lut}


def apply_lut(array: np.ndarray, lut: Mapping[str, Any]) -> np.ndarray:
    """Apply a VOI LUT (PS3.3 C.11.2.1.1) and scale its output to ``[0, 1]``.

    Parameters
    ----------
    array : numpy.ndarray
        Values after the modality LUT.
    lut : Mapping
        ``{"first_mapped": int, "bits": int, "data": [int, ...]}`` (LUT
        Descriptor and LUT Data): values below the first mapped value take the
        first entry, values beyond the last take the last entry, as pydicom's
        ``apply_voi_lut`` does.

    Returns
    -------
    numpy.ndarray
        float32 in ``[0, 1]``.
    """
    data = np.asarray(lut["data"], dtype=np.float64)
    first = int(lut["first_mapped"])
    top = float(2 ** int(lut["bits"]) - 1)
    idx = np.clip(np.rint(np.asarray(array, dtype=np.float64)) - first, 0, len(data) - 1).astype(np.int64)
    return np.clip(data[idx] / top, 0.0, 1.0).astype(np.float32)


def normalize_xray(
    array: np.ndarray,
    *,
    method: XrayMethod | str = XrayMethod.VOI,
    window: Sequence[float] | None = None,
    function: str = "linear",
    photometric: str = "MONOCHROME2",
    percentiles: Sequence[float] = (1.0, 99.0),
    clahe: bool = False,
    dataset: Any = None,
    lut: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Normalise a radiograph to ``[0, 1]``, brighter = more attenuation.

    Parameters
    ----------
    array : numpy.ndarray
        2D values after the modality LUT.
    method : {"voi", "percentile"}
        ``"voi"`` uses the header's VOI LUT or window when present and falls
        back to percentiles; ``"percentile"`` always uses percentiles.
    window : (center, width), optional
        The header window (WindowCenter, WindowWidth).
    function : {"linear", "linear_exact", "sigmoid"}
        VOILUTFunction for ``window``.
    photometric : {"MONOCHROME2", "MONOCHROME1"}
        PhotometricInterpretation; MONOCHROME1 is inverted after the VOI step.
    percentiles : (low, high)
        For the percentile method/fallback.
    clahe : bool
        Apply contrast-limited adaptive histogram equalisation afterwards.
    dataset : pydicom.Dataset, optional
        When given and it holds a VOI LUT Sequence, that LUT is applied with
        pydicom's ``apply_voi_lut`` (it takes precedence over a window, as in
        pydicom); its window/photometric attributes are used when the
        arguments are left at their defaults.
    lut : Mapping, optional
        A VOI LUT as :func:`apply_lut` takes (e.g. ``voi_from_meta(image.meta)["lut"]``);
        wins over ``window``.

    Returns
    -------
    numpy.ndarray
        float32 ``(rows, columns)`` in ``[0, 1]``.

    Raises
    ------
    SpecError
        An unknown method or bad percentiles.
    UnsupportedDataError
        A photometric interpretation other than MONOCHROME1/2.

    Notes
    -----
    Windows follow PS3.3 C.11.2.1.2 via :func:`~medmulti.intensity.apply_window`
    with output range ``[0, 1]``, which equals pydicom's ``apply_windowing``
    output rescaled from its ``[y_min, y_max]`` to ``[0, 1]``.
    """
    try:
        m = XrayMethod(method)
    except ValueError:
        raise SpecError(f"unknown X-ray method {method!r}; use one of {[v.value for v in XrayMethod]}",
                        keyword="method") from None
    ds_lut = None
    if dataset is not None:
        voi = voi_from_meta(dataset)
        if window is None:
            window = voi["window"]
            function = voi["function"]
        if photometric == "MONOCHROME2":
            photometric = voi["photometric"]
        if m is XrayMethod.VOI and "VOILUTSequence" in dataset and len(dataset.VOILUTSequence):
            ds_lut = dataset
    photometric = str(photometric).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedDataError(
            "only MONOCHROME1/MONOCHROME2 radiographs can be normalised",
            keyword="PhotometricInterpretation",
        )
    x = np.asarray(array)
    if m is XrayMethod.VOI and ds_lut is not None:
        from pydicom.pixels import apply_voi_lut

        item = ds_lut.VOILUTSequence[0]
        depth = int(item.LUTDescriptor[2])
        out = apply_voi_lut(x, ds_lut, index=0, prefer_lut=True).astype(np.float64) / float(2**depth - 1)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
    elif m is XrayMethod.VOI and lut is not None:
        out = apply_lut(x, lut)
    elif m is XrayMethod.VOI and window is not None:
        out = apply_window(x, float(window[0]), float(window[1]), function=function)
    else:
        out = normalize_percentile(x, percentiles)
    if photometric == "MONOCHROME1":
        out = (np.float32(1.0) - out).astype(np.float32)
    if clahe:
        from skimage.exposure import equalize_adapthist

        out = equalize_adapthist(out, clip_limit=0.01).astype(np.float32)
    return out
