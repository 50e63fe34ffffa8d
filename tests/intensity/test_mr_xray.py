"""MR normalisation (percentiles, Otsu z-score, N4) and X-ray VOI/percentile/CLAHE."""

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from skimage.filters import threshold_otsu

from medmulti import SpecError, UnsupportedDataError
from medmulti.intensity import (
    correct_bias_n4,
    foreground_mask,
    normalize_mr,
    normalize_percentile,
    normalize_xray,
    voi_from_meta,
)

CR_DIR = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "77654033"
CR_FILE = sorted(CR_DIR.glob("CR*/*"))[0]


def _mr_small():
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    return ds.pixel_array.astype(np.float32)


def test_percentile_scaling_matches_numpy_percentiles_on_real_mr():
    x = _mr_small()
    lo, hi = np.percentile(x, [2, 98])
    out = normalize_mr(x, "percentile", percentiles=[2, 98])
    expected = np.clip((x - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0


def test_percentiles_from_a_reference_ignore_padding():
    x = _mr_small()
    padded = np.pad(x, 20)  # zeros would pull the 1st percentile down
    out = normalize_percentile(padded, (5, 95), reference=x)
    lo, hi = np.percentile(x, [5, 95])
    np.testing.assert_allclose(out[20:-20, 20:-20], np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_zscore_uses_the_otsu_foreground():
    x = _mr_small()
    mask = x > threshold_otsu(x)
    np.testing.assert_array_equal(foreground_mask(x), mask)
    z = normalize_mr(x, "zscore")
    assert abs(float(z[mask].mean())) < 1e-4
    assert float(z[mask].std()) == pytest.approx(1.0, abs=1e-4)


def test_bad_mr_settings_raise_spec_errors():
    with pytest.raises(SpecError):
        normalize_mr(np.zeros(4), "minmax")
    with pytest.raises(SpecError):
        normalize_mr(np.zeros(4), "percentile", percentiles=[90, 10])


def test_n4_removes_a_known_smooth_bias_field():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:24, :40, :40].astype(np.float32)
    tissue = 100.0 + 60.0 * ((x // 10 + y // 10) % 2)  # two tissue classes
    body = ((x - 20) ** 2 + (y - 20) ** 2) < 17**2
    truth = np.where(body, tissue, 0.0).astype(np.float32)
    field = np.exp(0.4 * (x - 20) / 20).astype(np.float32)  # +-40 % across the FOV
    biased = truth * field + rng.normal(0, 1, truth.shape).astype(np.float32) * body
    corrected = correct_bias_n4(biased, (2.0, 2.0, 2.0), shrink=2, iterations=(20, 20))
    cls_a = body & (tissue == 100)

    def cv(v):
        return float(v[cls_a].std() / v[cls_a].mean())

    assert cv(corrected) < 0.5 * cv(biased)


def test_cr_voi_matches_pydicom_and_monochrome1_is_inverted():
    ds = pydicom.dcmread(CR_FILE)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    values = apply_modality_lut(ds.pixel_array, ds)
    ref = apply_voi_lut(values, ds)
    lo = 0 * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hi = (2**ds.BitsStored - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = 1.0 - (ref - lo) / (hi - lo)
    np.testing.assert_allclose(normalize_xray(values, dataset=ds), expected, atol=2e-6)
    meta = {k: ds[k].value for k in ("WindowCenter", "WindowWidth", "PhotometricInterpretation")}
    voi = voi_from_meta(meta)
    got = normalize_xray(values, window=voi["window"], photometric=voi["photometric"])
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_voi_lut_sequence_wins_over_the_window_like_pydicom():
    ds = pydicom.dcmread(CR_FILE)
    ds = copy.deepcopy(ds)
    ds.PhotometricInterpretation = "MONOCHROME2"
    item = Dataset()
    item.LUTDescriptor = [1024, 1900, 16]  # 1024 entries, first mapped value 1900, 16-bit output
    lut_data = [min(65535, 90 * i) for i in range(1024)]
    item.LUTData = lut_data
    ds.VOILUTSequence = Sequence([item])
    values = ds.pixel_array
    expected = apply_voi_lut(values, ds, prefer_lut=True) / 65535.0
    assert 0.05 < expected.mean() < 0.95
    np.testing.assert_allclose(normalize_xray(values, dataset=ds), expected, atol=1e-6)
    # the same LUT as medmulti.io records it in Image.meta
    meta = {"photometric": "MONOCHROME2", "voi_lut": {"first_mapped": 1900, "bits": 16, "data": lut_data},
            "window": [{"center": 1600.0, "width": 2800.0}]}
    voi = voi_from_meta(meta)
    assert voi["window"] == (1600.0, 2800.0)
    got = normalize_xray(values, window=voi["window"], lut=voi["lut"], photometric=voi["photometric"])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_reader_inverted_monochrome1_is_not_inverted_twice():
    voi = voi_from_meta({"photometric": "MONOCHROME1", "inverted": True, "window": [{"center": 10, "width": 4}]})
    assert voi["photometric"] == "MONOCHROME2" and voi["window"] == (10.0, 4.0)


def test_xray_without_window_falls_back_to_percentiles_and_clahe_stays_in_range():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 4096, (64, 80)).astype(np.float32)
    out = normalize_xray(img, percentiles=(1, 99))
    lo, hi = np.percentile(img, [1, 99])
    np.testing.assert_allclose(out, np.clip((img - lo) / (hi - lo), 0, 1), atol=1e-6)
    eq = normalize_xray(img, clahe=True)
    assert eq.dtype == np.float32 and 0.0 <= eq.min() and eq.max() <= 1.0
    assert not np.allclose(eq, out)


def test_xray_rejects_colour_and_unknown_methods():
    with pytest.raises(UnsupportedDataError):
        normalize_xray(np.zeros((4, 4)), photometric="RGB")
    with pytest.raises(SpecError):
        normalize_xray(np.zeros((4, 4)), method="auto")
