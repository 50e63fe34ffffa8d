"""CT windowing against pydicom's apply_windowing on real files, and the PS3.3 edges."""

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

from medmulti import SpecError
from medmulti.intensity import CT_WINDOWS, apply_window, resolve_window, window_channels

CR_DIR = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
CR_FILES = sorted(str(p) for p in CR_DIR.glob("CR*/*"))


def _y_range(ds):
    """pydicom's output range for apply_windowing (PS3.3 C.11.2.1.2 y_min/y_max)."""
    if ds.PixelRepresentation == 0:
        lo, hi = 0, 2**ds.BitsStored - 1
    else:
        lo, hi = -(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        lo = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        hi = hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return lo, hi


@pytest.mark.parametrize("preset", ["brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"])
@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_ct_small_matches_pydicom_apply_windowing(preset, function):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds)
    center, width = CT_WINDOWS[preset]
    wds = copy.deepcopy(ds)
    wds.WindowCenter, wds.WindowWidth, wds.VOILUTFunction = center, width, function
    expected = apply_windowing(hu, wds)
    lo, hi = _y_range(wds)
    expected = (expected - lo) / (hi - lo)
    got = apply_window(hu, center, width, function=function.lower())
    assert got.dtype == np.float32 and got.shape == hu.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert got.min() >= 0.0 and got.max() <= 1.0


@pytest.mark.parametrize("path", CR_FILES)
def test_cr_header_window_matches_pydicom_apply_voi_lut(path):
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CR" and "WindowCenter" in ds
    values = apply_modality_lut(ds.pixel_array, ds)
    expected = apply_voi_lut(values, ds)
    lo, hi = _y_range(ds)
    expected = (expected - lo) / (hi - lo)
    got = apply_window(values, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_exact_values_at_the_linear_window_edges():
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 1
    c, w = 40.0, 80.0
    low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2  # 0.0 and 79.0
    x = np.array([low - 1000, low, low + 1e-3, c - 0.5, high, high + 1e-3, 3000.0])
    y = apply_window(x, c, w)
    assert y[0] == 0.0 and y[1] == 0.0
    assert y[2] == pytest.approx(1e-3 / 79, rel=1e-4)
    assert y[3] == pytest.approx(0.5, abs=1e-7)
    assert y[4] == 1.0 and y[5] == 1.0 and y[6] == 1.0


def test_exact_values_at_the_linear_exact_edges():
    y = apply_window(np.array([-100.0, -60.0, 40.0, 140.0, 140.001]), 40.0, 200.0, function="linear_exact")
    np.testing.assert_array_equal(y[[0, 1, 3, 4]], [0.0, 0.0, 1.0, 1.0])
    assert y[2] == pytest.approx(0.5)


def test_width_one_linear_is_a_threshold():
    y = apply_window(np.array([38.0, 39.5, 39.6, 41.0]), 40.0, 1.0)
    np.testing.assert_array_equal(y, [0.0, 0.0, 1.0, 1.0])


def test_bad_widths_and_functions_raise_spec_errors():
    with pytest.raises(SpecError):
        apply_window(np.zeros(3), 0, 0.5)
    with pytest.raises(SpecError):
        apply_window(np.zeros(3), 0, 0, function="sigmoid")
    with pytest.raises(SpecError):
        apply_window(np.zeros(3), 0, 10, function="gamma")


def test_window_channels_stack_presets_and_custom_windows_last():
    hu = np.linspace(-1200, 2000, 60, dtype=np.float32).reshape(3, 4, 5)
    out = window_channels(hu, ["brain", [400, 1800], "lung"])
    assert out.shape == (3, 4, 5, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0], apply_window(hu, 40, 80))
    np.testing.assert_array_equal(out[..., 1], apply_window(hu, *CT_WINDOWS["bone"]))
    np.testing.assert_array_equal(out[..., 2], apply_window(hu, -600, 1500))


def test_unknown_preset_names_the_presets():
    with pytest.raises(SpecError, match="brain"):
        resolve_window("brian")
    with pytest.raises(SpecError):
        window_channels(np.zeros(3), [])


def test_preset_table_has_the_required_windows():
    for name in ["brain", "subdural", "stroke", "lung", "mediastinum", "abdomen", "liver", "bone"]:
        c, w = CT_WINDOWS[name]
        assert w > 0
