"""Single DICOM files: pydicom's bundled real files, SimpleITK/pydicom as oracles."""

from __future__ import annotations

import json
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from io_helpers import bundled, dicomdir_root
from pydicom.pixels import apply_modality_lut

from medmulti import CorruptFileError, MissingFileError, UnsupportedDataError, read_image
from medmulti.image import Image
from medmulti.io import inspect_source

MR_VARIANTS = [
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
]


def sitk_image(path) -> Image:
    return Image.from_sitk(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "examples_overlay.dcm"])
def test_single_slice_equals_simpleitk(name):
    path = bundled(name)
    img = read_image(path)
    ref = sitk_image(path)
    assert img.array.dtype == np.float32
    assert img.shape == ref.shape and img.shape[0] == 1
    np.testing.assert_allclose(img.array, ref.array, rtol=0, atol=1e-3)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-6)
    np.testing.assert_allclose(img.spacing, ref.spacing, atol=1e-6)


def test_ct_is_hounsfield_per_pydicom_modality_lut():
    path = bundled("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    img = read_image(path)
    assert img.modality == "CT"
    np.testing.assert_array_equal(img.array[0], expected.astype(np.float32))
    assert float(ds.RescaleIntercept) != 0  # the LUT really did something


@pytest.mark.parametrize("name", MR_VARIANTS)
def test_mr_variants_equal_uncompressed(name):
    ref = read_image(bundled("MR_small.dcm"))
    img = read_image(bundled(name))
    np.testing.assert_array_equal(img.array, ref.array)  # all these are lossless
    np.testing.assert_allclose(img.affine, ref.affine)
    assert img.meta["compressed"] == (name in {"MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"})


def test_deflated_file_equals_pydicom():
    path = bundled("image_dfl.dcm")
    ds = pydicom.dcmread(path)
    img = read_image(path)
    np.testing.assert_array_equal(img.array, ds.pixel_array.astype(np.float32))


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_truncated_files_are_corrupt(name):
    with pytest.raises(CorruptFileError) as info:
        read_image(bundled(name))
    assert name in str(info.value)


def test_truncated_detected_by_inspect_without_decoding():
    with pytest.raises(CorruptFileError):
        inspect_source(bundled("MR_truncated.dcm"))


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm", "rtstruct.dcm", "rtdose.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_non_image_objects_refused(name):
    with pytest.raises(UnsupportedDataError):
        read_image(bundled(name))
    with pytest.raises(UnsupportedDataError):
        inspect_source(bundled(name))


@pytest.mark.parametrize("name", ["SC_rgb_jpeg.dcm", "SC_rgb_rle.dcm", "examples_palette.dcm", "examples_ybr_color.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_colour_refused(name):
    with pytest.raises(UnsupportedDataError) as info:
        read_image(bundled(name))
    assert info.value.keyword in ("PhotometricInterpretation",)


def test_missing_path():
    with pytest.raises(MissingFileError):
        read_image("/nonexistent/nowhere.dcm")
    with pytest.raises(MissingFileError):
        inspect_source("/nonexistent/nowhere.dcm")


def test_not_dicom_or_nifti(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not an image\n" * 50)
    with pytest.raises(UnsupportedDataError):
        read_image(p)


def test_dicom_recognised_without_extension_and_without_preamble(tmp_path):
    # same dataset written without preamble/file meta (a raw dataset)
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / "slice_without_extension"
    ds.save_as(raw, enforce_file_format=False, implicit_vr=False, little_endian=True)
    data = raw.read_bytes()
    assert data[128:132] != b"DICM"
    img = read_image(raw)
    np.testing.assert_array_equal(img.array, read_image(bundled("MR_small.dcm")).array)


@pytest.mark.parametrize("series", ["CR1", "CR2", "CR3"])
def test_real_cr_monochrome1_inverted_like_simpleitk(series):
    folder = dicomdir_root() / "77654033" / series
    path = folder / os.listdir(folder)[0]
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = read_image(path)
    assert img.ndim == 2 and img.affine is None
    assert img.modality == "CR"
    # oracle 1: SimpleITK (GDCM inverts MONOCHROME1 too)
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]
    np.testing.assert_allclose(img.array, ref, atol=1e-3)
    # oracle 2: pydicom modality LUT, inverted over the output range
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    lo = 0 * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    hi = (2 ** ds.BitsStored - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(img.array, lo + hi - hu, atol=1e-3)
    # larger means brighter: the largest stored value is now the smallest
    assert np.argmin(img.array) == np.argmax(ds.pixel_array)
    assert img.spacing == tuple(float(v) for v in ds.ImagerPixelSpacing)
    assert img.meta["photometric"] == "MONOCHROME1" and img.meta["inverted"] is True
    assert img.meta["bits_stored"] == ds.BitsStored
    # the window is mapped into the inverted domain
    c = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
    assert img.meta["window"][0]["center"] == pytest.approx(lo + hi - c)
    json.dumps(img.meta)  # JSON-able


def test_meta_has_no_identifying_values():
    path = bundled("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_image(path)
    text = json.dumps(img.meta)
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstitutionName", "AccessionNumber"):
        value = str(ds.get(kw, "") or "")
        if len(value) > 3:
            assert value not in text, kw
    info = inspect_source(path)
    text = repr(info)
    for kw in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        value = str(ds.get(kw, "") or "")
        if len(value) > 3:
            assert value not in text, kw
