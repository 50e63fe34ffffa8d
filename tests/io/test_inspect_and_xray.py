"""inspect_source (header-level checks, digests) and generated X-ray files."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from io_helpers import bundled

from medmulti import CorruptFileError, ResourceLimitError, read_image
from medmulti.examples import synth
from medmulti.io import Limits, inspect_source


def test_inspect_matches_read_image_for_a_series(long_series):
    folder, vol, _ = long_series
    info = inspect_source(folder)
    img = read_image(folder)
    assert info.kind == "dicom-series" and info.n_files == 120 == len(info.files)
    assert info.shape == img.shape and info.spacing == pytest.approx(img.spacing)
    np.testing.assert_allclose(info.affine, img.affine)
    assert info.digests["pixels"] is None  # header level only
    # files in slice order: their ImagePositionPatient rises along the normal (+z here)
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in info.files[:5]]
    assert z == sorted(z)


def test_digests_compare_identity_without_revealing_it(tmp_path, volume_hu):
    a = synth.write_dicom_series(volume_hu[:3], tmp_path / "a", patient={"PatientID": "CANARY-123", "PatientName": "Doe^Jane"})
    b = synth.write_dicom_series(volume_hu[:3], tmp_path / "b", patient={"PatientID": "CANARY-123", "PatientName": "Doe^Jane"})
    c = synth.write_dicom_series(volume_hu[:3], tmp_path / "c", patient={"PatientID": "OTHER-999", "PatientName": "Roe^Rick"})
    da, db, dc = (inspect_source(p[0].parent) for p in (a, b, c))
    assert da.digests["patient"] == db.digests["patient"] != dc.digests["patient"]
    assert da.digests["series"] != db.digests["series"]  # each write made its own series UID
    text = repr(da) + json.dumps(da.digests) + json.dumps(read_image(a[0].parent).meta)
    assert "CANARY" not in text and "Doe" not in text
    ds = pydicom.dcmread(a[0])
    assert str(ds.SeriesInstanceUID) not in text and str(ds.StudyInstanceUID) not in text


def test_deep_digest_of_pixels(tmp_path, volume_hu):
    a = synth.write_dicom_series(volume_hu[:4], tmp_path / "a")
    b = synth.write_dicom_series(volume_hu[:4], tmp_path / "b")
    c = synth.write_dicom_series(volume_hu[1:5], tmp_path / "c")
    pa, pb, pc = (inspect_source(p[0].parent, deep=True).digests["pixels"] for p in (a, b, c))
    assert pa == pb != pc and len(pa) == 16


def test_inspect_catches_truncation_of_compressed_file(tmp_path):
    data = open(bundled("MR_small_jp2klossless.dcm"), "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:-120])
    with pytest.raises(CorruptFileError):
        inspect_source(cut)


def test_limits_before_allocation(tmp_path, volume_hu):
    synth.write_dicom_series(volume_hu, tmp_path)
    with pytest.raises(ResourceLimitError):
        read_image(tmp_path, limits=Limits(max_voxels=1000))
    with pytest.raises(ResourceLimitError):
        read_image(tmp_path, limits=Limits(max_files=5))


def test_blown_up_rows_refused_before_allocation(tmp_path):
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.Rows = 65535
    ds.Columns = 65535
    ds.NumberOfFrames = 1000
    path = tmp_path / "big.dcm"
    ds.save_as(path)
    with pytest.raises(ResourceLimitError):  # 4e12 voxels declared: beyond the default cap
        read_image(path)
    ds.Rows = ds.Columns = 8000
    ds.NumberOfFrames = 1
    ds.save_as(path)
    with pytest.raises(CorruptFileError):  # within the cap, but far beyond the 8 KiB present
        read_image(path)


def test_deep_sequence_nesting_refused(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(20):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = Sequence([inner])
    path = tmp_path / "nested.dcm"
    ds.save_as(path)
    with pytest.raises(ResourceLimitError):
        read_image(path, limits=Limits(max_depth=16))
    assert read_image(path).shape == (1, 64, 64)  # 21 levels: within the default cap (32)


def _voi_lut_item(first: int, data: np.ndarray, bits: int = 16):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.LUTData = np.asarray(data, "<u2").tobytes()
    return item


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_generated_dx_values_window_and_voi_lut(tmp_path, photometric):
    from pydicom.pixels import apply_voi_lut
    from pydicom.sequence import Sequence

    rng = np.random.default_rng(11)
    stored = rng.integers(0, 4096, size=(40, 30))
    lut = np.linspace(0, 65535, 4096).astype(np.int64) ** 1  # a monotone LUT over the 12-bit range
    path = synth.write_dicom_xray(
        stored, tmp_path / "dx.dcm", modality="DX", photometric=photometric, bits_stored=12, window=(1500.0, 2000.0),
        pixel_spacing=(0.15, 0.16), extra={"VOILUTSequence": Sequence([_voi_lut_item(0, lut)])},
    )
    img = read_image(path)
    ds = pydicom.dcmread(path)
    assert img.ndim == 2 and img.affine is None and img.modality == "DX"
    assert img.spacing == (0.15, 0.16)
    inverted = photometric == "MONOCHROME1"
    s = 0 + 4095  # output range of a 12-bit unsigned image without rescale
    expected = (s - stored) if inverted else stored
    np.testing.assert_array_equal(img.array, expected.astype(np.float32))
    assert img.meta["inverted"] is inverted and img.meta["photometric"] == photometric
    assert img.meta["window"] == [{"center": (s - 1500.0) if inverted else 1500.0, "width": 2000.0}]
    # the VOI LUT applied to medmulti's array gives pydicom's display of the file
    # (inverted for MONOCHROME1, whose display is inverted)
    voi = img.meta["voi_lut"]
    table = np.asarray(voi["data"])
    idx = np.clip(img.array.astype(np.int64) - voi["first_mapped"], 0, len(table) - 1)
    ours = table[idx]
    ref = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True).astype(np.int64)
    top = 2 ** voi["bits"] - 1
    np.testing.assert_array_equal(ours, (top - ref) if inverted else ref)
    json.dumps(img.meta)


def test_generated_cr_rescaled(tmp_path):
    stored = np.arange(20 * 20).reshape(20, 20) % 1024
    path = synth.write_dicom_xray(stored, tmp_path / "cr.dcm", modality="CR", bits_stored=10,
                                  extra={"RescaleSlope": 0.5, "RescaleIntercept": 10.0})
    img = read_image(path)
    np.testing.assert_allclose(img.array, stored * 0.5 + 10.0)
    assert img.meta["spacing_source"] == "PixelSpacing"


def test_header_values_never_reach_logs_or_warnings(tmp_path, caplog, recwarn):
    import logging

    # an invalid UI value that pydicom would quote in a warning and a log record
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds["SeriesInstanceUID"].value = "CANARY.UID.not-valid"
    ds.PatientName = "CANARY^NAME"
    path = tmp_path / "x.dcm"
    ds.save_as(path)
    caplog.clear()
    recwarn.clear()
    with caplog.at_level(logging.DEBUG):
        read_image(path)
        inspect_source(path)
    assert "CANARY" not in caplog.text
    assert not any("CANARY" in str(w.message) for w in recwarn)


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_rows_changed_in_compressed_header_refused_before_decoding(tmp_path, name):
    # the codestream says 64 x 64; a header claiming 4096 rows must not reach the decoder
    ds = pydicom.dcmread(bundled(name))
    ds.Rows = 4096
    path = tmp_path / "lying.dcm"
    ds.save_as(path)
    with pytest.raises(CorruptFileError) as info:
        inspect_source(path)
    assert info.value.keyword == "Rows"
    with pytest.raises(CorruptFileError):
        read_image(path)
