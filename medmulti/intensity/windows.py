"""CT windowing: Hounsfield units -> display values in [0, 1].

The window function is the DICOM VOI LUT window of PS3.3 C.11.2.1.2 (the
``LINEAR`` function, C.11.2.1.2.1, by default; ``LINEAR_EXACT`` and ``SIGMOID``
from C.11.2.1.3 on request), with the output range fixed to ``[0, 1]``. Several
windows of one CT are stacked as channels, the usual multi-window input of CT
models.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import Mapping, Sequence, Union

import numpy as np

from ..errors import SpecError

__all__ = ["CT_WINDOWS", "WindowFunction", "apply_window", "resolve_window", "window_channels"]

#: Named CT windows as ``(center, width)`` in HU (common radiology presets; read-only).
CT_WINDOWS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal_bone": (600.0, 2800.0),
    "soft_tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
})

Window = Union[str, Sequence[float]]


class WindowFunction(str, Enum):
    """VOI LUT Function (0028,1056) values, PS3.3 C.11.2.1.3."""

    LINEAR = "linear"
    LINEAR_EXACT = "linear_exact"
    SIGMOID = "sigmoid"


def resolve_window(window: Window) -> tuple[float, float]:
    """Turn a preset name or a ``[center, width]`` pair into ``(center, width)`` HU.

    Parameters
    ----------
    window : str or sequence of two floats
        A key of :data:`CT_WINDOWS` or ``(center, width)`` in HU.

    Returns
    -------
    tuple of float
        ``(center, width)``.

    Raises
    ------
    SpecError
        An unknown preset name or a malformed pair.

    Examples
    --------
    >>> resolve_window("lung")
    (-600.0, 1500.0)
    >>> resolve_window([40, 80])
    (40.0, 80.0)
    """
    if isinstance(window, str):
        key = window.strip().lower()
        if key not in CT_WINDOWS:
            raise SpecError(
                f"unknown CT window {window!r}; presets are {sorted(CT_WINDOWS)}, or give [center, width] in HU",
                keyword="windows",
            )
        c, w = CT_WINDOWS[key]
        return float(c), float(w)
    try:
        c, w = (float(v) for v in window)
    except (TypeError, ValueError):
        raise SpecError(f"a CT window is a preset name or [center, width] in HU, got {window!r}",
                        keyword="windows") from None
    return c, w


def apply_window(
    array_hu: np.ndarray,
    center: float,
    width: float,
    *,
    function: WindowFunction | str = WindowFunction.LINEAR,
) -> np.ndarray:
    """Map values (HU for CT) through a VOI window onto ``[0, 1]``.

    Parameters
    ----------
    array_hu : numpy.ndarray
        Values after the modality LUT (Hounsfield units for CT), any shape.
    center : float
        Window Center (0028,1050), same units.
    width : float
        Window Width (0028,1051), same units; ``>= 1`` for ``"linear"``, ``> 0``
        otherwise.
    function : {"linear", "linear_exact", "sigmoid"}
        VOI LUT Function (0028,1056).

    Returns
    -------
    numpy.ndarray
        float32, same shape, values in ``[0, 1]``.

    Raises
    ------
    SpecError
        A width outside the range the function allows, or an unknown function.

    Notes
    -----
    PS3.3 C.11.2.1.2.1 (``LINEAR``), with output range ``[y_min, y_max] = [0, 1]``::

        x <= c - 0.5 - (w - 1) / 2         -> 0
        x >  c - 0.5 + (w - 1) / 2         -> 1
        else  ((x - (c - 0.5)) / (w - 1) + 0.5)

    ``LINEAR_EXACT`` (C.11.2.1.3.2) is the same without the ``0.5``/``1``
    offsets; ``SIGMOID`` (C.11.2.1.3.1) is ``1 / (1 + exp(-4 (x - c) / w))``.
    The edges are exact: values on or below the lower edge give exactly 0 and
    values above the upper edge exactly 1, as in pydicom's ``apply_windowing``.

    Examples
    --------
    >>> [round(float(v), 4) for v in apply_window(np.array([-1000.0, 0.0, 20.0, 40.0, 1000.0]), 40, 80)]
    [0.0, 0.0, 0.2532, 0.5063, 1.0]
    """
    try:
        func = WindowFunction(function.lower() if isinstance(function, str) else function)
    except ValueError:
        raise SpecError(f"unknown window function {function!r}; use one of {[f.value for f in WindowFunction]}",
                        keyword="VOILUTFunction") from None
    x = np.asarray(array_hu)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    c = float(center)
    w = float(width)
    if func is WindowFunction.SIGMOID:
        if w <= 0:
            raise SpecError("window width must be > 0 for the SIGMOID function", keyword="WindowWidth")
        return (1.0 / (1.0 + np.exp(-4.0 * (x.astype(np.float64) - c) / w))).astype(np.float32)
    if func is WindowFunction.LINEAR:
        if w < 1:
            raise SpecError("window width must be >= 1 for the LINEAR function", keyword="WindowWidth")
        c -= 0.5
        w -= 1.0
    elif w <= 0:
        raise SpecError("window width must be > 0 for the LINEAR_EXACT function", keyword="WindowWidth")
    low = c - w / 2.0
    high = c + w / 2.0
    if w == 0:  # LINEAR with width 1: a pure threshold
        return (x > high).astype(np.float32)
    out = (x - low) * (1.0 / w)
    np.clip(out, 0.0, 1.0, out=out)
    out[x <= low] = 0.0
    out[x > high] = 1.0
    return out.astype(np.float32, copy=False)


def window_channels(
    array_hu: np.ndarray,
    windows: Sequence[Window],
    *,
    function: WindowFunction | str = WindowFunction.LINEAR,
) -> np.ndarray:
    """Stack several windows of one array as channels (last axis).

    Parameters
    ----------
    array_hu : numpy.ndarray
        Values in HU, spatial shape ``S``.
    windows : sequence
        Preset names or ``(center, width)`` pairs, one per output channel.
    function : {"linear", "linear_exact", "sigmoid"}
        VOI LUT function for every window.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``(*S, len(windows))`` in ``[0, 1]``.

    Raises
    ------
    SpecError
        No windows, or an unknown preset.

    Examples
    --------
    >>> window_channels(np.zeros((2, 3)), ["brain", "bone"]).shape
    (2, 3, 2)
    """
    if isinstance(windows, str) or not len(windows):
        raise SpecError("windows must be a non-empty list of presets or [center, width] pairs", keyword="windows")
    x = np.asarray(array_hu)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    out = np.empty(x.shape + (len(windows),), np.float32)
    for i, win in enumerate(windows):
        c, w = resolve_window(win)
        out[..., i] = apply_window(x, c, w, function=function)
    return out
