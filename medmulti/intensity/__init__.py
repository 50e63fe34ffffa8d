"""Intensity: CT windows (HU -> [0, 1] channels), MR and X-ray normalisation."""

from .mr import MRMethod, correct_bias_n4, foreground_mask, normalize_mr, normalize_percentile, normalize_zscore
from .windows import CT_WINDOWS, WindowFunction, apply_window, resolve_window, window_channels
from .xray import XrayMethod, apply_lut, normalize_xray, voi_from_meta

__all__ = [
    "CT_WINDOWS",
    "WindowFunction",
    "apply_window",
    "resolve_window",
    "window_channels",
    "MRMethod",
    "foreground_mask",
    "normalize_percentile",
    "normalize_zscore",
    "correct_bias_n4",
    "normalize_mr",
    "XrayMethod",
    "normalize_xray",
    "voi_from_meta",
    "apply_lut",
]
