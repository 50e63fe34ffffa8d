"""Real X-ray headers the readers must take (issue 16): pixel spacing that is ``0\\0``,
absent or only ImagerPixelSpacing; a Modality LUT Sequence; lossy JPEG.

Every file here is a real file bundled with pydicom, or a copy of one modified with
pydicom; the expected values come from pydicom (``apply_modality_lut``,
``pixel_array``, the header's own attributes) and SimpleITK where it reads the file
the same way, never from medmulti's own output.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from io_helpers import bundled, dicomdir_root
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence

from medmulti import CorruptFileError, UnsupportedDataError, read_image
from medmulti.examples import synth
from medmulti.io import inspect_source
from medmulti.io.dicom_header import UNKNOWN_SPACING_WARNING
from medmulti.io.values import ModalityLut, apply_modality_lut_into, modality_lut_of, rescale_of

CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
SC_SOP = "1.2.840.10008.5.1.4.1.1.7"


def real_cr() -> Path:
    """A real CR (MONOCHROME1, 12 bits, rescaled; ImagerPixelSpacing only)."""
    folder = dicomdir_root() / "77654033" / "CR1"
    return folder / os.listdir(folder)[0]


def sitk_spacing(path: Path) -> tuple[float, float]:
    """SimpleITK's (row, column) spacing of a 2D file (its x, y reversed)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    sx, sy = reader.GetSpacing()[:2]
    return (sy, sx)


def _copy(src: Path | str, dst: Path, edit) -> Path:
    ds = pydicom.dcmread(src)
    edit(ds)
    ds.save_as(dst)
    return dst


def _drop(ds: Dataset, *keywords: str) -> None:
    for kw in keywords:
        if kw in ds:
            delattr(ds, kw)


# -- pixel spacing ------------------------------------------------------------------

def _spacing(ps=None, ips=None, sop=None):
    def edit(ds):
        _drop(ds, "PixelSpacing", "ImagerPixelSpacing")
        if ps is not None:
            ds.PixelSpacing = ps
        if ips is not None:
            ds.ImagerPixelSpacing = ips
        if sop is not None:
            ds.SOPClassUID = sop
            ds.file_meta.MediaStorageSOPClassUID = sop
    return edit


# (case, edit, attribute expected to give the spacing or "none", whether GDCM reads that attribute too)
SPACING_CASES = [
    ("as_shipped", lambda ds: None, "ImagerPixelSpacing", True),
    ("only_imager_non_square", _spacing(ips=[0.1, 0.15]), "ImagerPixelSpacing", True),
    ("zero_pixel_spacing_and_imager", _spacing(ps=[0, 0], ips=[0.1, 0.15]), "ImagerPixelSpacing", True),
    ("zero_pixel_spacing_only", _spacing(ps=[0, 0]), "none", True),
    ("one_zero_component", _spacing(ps=[0, 0.2]), "none", True),
    ("zero_imager_only", _spacing(ips=[0, 0]), "none", True),
    ("neither", _spacing(), "none", True),
    # PixelSpacing (calibrated, at the patient) wins over ImagerPixelSpacing; GDCM reads
    # PixelSpacing only for storage classes other than CR/DX/MG/XA, as here (SC)
    ("pixel_spacing_sc", _spacing(ps=[0.2, 0.3], ips=[0.1, 0.15], sop=SC_SOP), "PixelSpacing", True),
    ("pixel_spacing_cr", _spacing(ps=[0.2, 0.3], ips=[0.1, 0.15], sop=CR_SOP), "PixelSpacing", False),
    ("zero_imager_pixel_spacing", _spacing(ps=[0.2, 0.3], ips=[0, 0], sop=SC_SOP), "PixelSpacing", True),
]


@pytest.mark.parametrize("case,edit,source,gdcm_agrees", SPACING_CASES, ids=[c[0] for c in SPACING_CASES])
def test_projection_spacing_zero_absent_or_imager_only(tmp_path, case, edit, source, gdcm_agrees):
    path = _copy(real_cr(), tmp_path / "cr.dcm", edit)
    ds = pydicom.dcmread(path)
    img = read_image(path)
    if source == "none":
        expected = (1.0, 1.0)
        assert img.meta["warnings"] == [UNKNOWN_SPACING_WARNING]
        assert "PixelSpacing" in UNKNOWN_SPACING_WARNING and "ImagerPixelSpacing" in UNKNOWN_SPACING_WARNING
    else:
        expected = tuple(float(v) for v in ds[source].value)
        assert "warnings" not in img.meta
    assert img.spacing == expected and img.meta["spacing_source"] == source
    if gdcm_agrees:
        assert img.spacing == pytest.approx(sitk_spacing(path))
    # the values do not depend on the spacing: pydicom's modality LUT, MONOCHROME1 inverted
    ref = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    lo, hi = img.meta["value_range"]
    np.testing.assert_allclose(img.array, lo + hi - ref, atol=1e-3)
    # inspect_source (headers only, what validation uses) says the same
    info = inspect_source(path)
    assert info.spacing == img.spacing and info.shape == img.shape
    assert info.warnings == img.meta.get("warnings", [])
    # a folder holding the one file too
    assert inspect_source(tmp_path).spacing == img.spacing
    assert read_image(tmp_path).meta.get("warnings") == img.meta.get("warnings")


@pytest.mark.parametrize("keyword", ["PixelSpacing", "ImagerPixelSpacing"])
def test_negative_spacing_is_refused_naming_the_attribute(tmp_path, keyword):
    path = _copy(real_cr(), tmp_path / "cr.dcm", lambda ds: setattr(ds, keyword, [-0.173, 0.173]))
    for fn in (read_image, inspect_source):
        with pytest.raises(CorruptFileError) as ei:
            fn(path)
        assert ei.value.keyword == keyword and "0.173" not in str(ei.value)


def test_unknown_spacing_reaches_validation_as_a_warning(tmp_path):
    from medmulti.manifest import validate_manifest
    from medmulti.spec import LabelSpec, ModalitySpec, StudySpec

    _copy(real_cr(), tmp_path / "p1.dcm", _spacing(ps=[0, 0]))
    _copy(real_cr(), tmp_path / "p2.dcm", _spacing(ps=[0, 0], ips=[0.1, 0.1]))
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "split", "diagnosis", "xray"])
        w.writerow(["p1", "train", "healthy", "p1.dcm"])
        w.writerow(["p2", "train", "disease", "p2.dcm"])
    spec = StudySpec(modalities=[ModalitySpec(name="xray", kind="xray", shape=(8, 8))],
                     labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]), name="xr")
    report = validate_manifest(manifest, spec, workers=1, progress=False)
    found = [(p.patient_id, p.check, p.severity, p.message) for p in report.problems if p.check == "reader_warning"]
    assert found == [("p1", "reader_warning", "warning", UNKNOWN_SPACING_WARNING)]
    # the two rows hold one image of one study, which validation reports as such: not this test's concern
    errors = {p.check for p in report.problems if p.severity == "error"}
    assert errors <= {"duplicate_image", "same_study_two_patients"}


# -- Modality LUT Sequence -------------------------------------------------------------

def _lut_item(first: int, data, bits: int, *, vr: str = "OW", descriptor_vr: str = "US") -> Dataset:
    item = Dataset()
    n = len(data)
    item.add_new("LUTDescriptor", descriptor_vr, [0 if n == 65536 else n, first, bits])
    if vr == "OW":
        item.add_new("LUTData", "OW", np.asarray(data, "<u2").tobytes())
    else:
        item.add_new("LUTData", "US", [int(v) for v in data])
    item.ModalityLUTType = "US"
    return item


def _with_lut(first, data, bits, *, vr="OW", descriptor_vr="US", undefined_length=False):
    def edit(ds):
        _drop(ds, "RescaleSlope", "RescaleIntercept", "RescaleType")
        ds.ModalityLUTSequence = Sequence([_lut_item(first, data, bits, vr=vr, descriptor_vr=descriptor_vr)])
        ds["ModalityLUTSequence"].is_undefined_length = undefined_length
    return edit


RNG = np.random.default_rng(16)
LUT_CASES = [
    # the CR stores 12-bit values around 2000-2800
    ("ow_16bit_whole_range", dict(first=0, data=RNG.integers(0, 65536, 4096), bits=16)),
    ("us_list_first_mapped_inside", dict(first=2300, data=np.arange(300) * 7, bits=16, vr="US")),
    ("ow_8bit_entries", dict(first=100, data=RNG.integers(0, 256, 3000), bits=8)),
    ("undefined_length_sequence", dict(first=0, data=RNG.integers(0, 65536, 4096), bits=16, undefined_length=True)),
]


@pytest.mark.parametrize("case,lut", LUT_CASES, ids=[c[0] for c in LUT_CASES])
def test_modality_lut_sequence_on_a_real_cr_equals_pydicom(tmp_path, case, lut):
    path = _copy(real_cr(), tmp_path / "cr.dcm", _with_lut(**lut))
    ds = pydicom.dcmread(path)
    assert "RescaleSlope" not in ds and ds.PhotometricInterpretation == "MONOCHROME1"
    ref = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    img = read_image(path)
    # MONOCHROME1: inverted over the table's output range (its smallest and largest entry)
    table = np.asarray(lut["data"], np.float64)
    lo, hi = table.min(), table.max()
    assert img.meta["value_range"] == [lo, hi] and img.meta["inverted"] is True
    np.testing.assert_array_equal(img.array.astype(np.float64), lo + hi - ref)
    assert img.meta["modality_lut"] == {"first_mapped": lut["first"], "bits": lut["bits"], "entries": len(table)}
    assert "rescale" not in img.meta
    json.dumps(img.meta)
    assert inspect_source(path).shape == img.shape


def test_modality_lut_in_an_implicit_vr_file(tmp_path):
    """LUTData's VR is 'US or OW': in implicit VR pydicom resolves it from the descriptor."""
    data = RNG.integers(0, 65536, 4096)

    def edit(ds):
        _with_lut(0, data, 16)(ds)
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian

    path = _copy(real_cr(), tmp_path / "cr.dcm", edit)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    img = read_image(path)
    np.testing.assert_array_equal(img.array, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert img.meta["inverted"] is False


def test_modality_lut_on_a_signed_ct_slice_with_a_negative_first_value(tmp_path):
    """A single slice with geometry takes the LUT too; a signed image's first mapped value is SS."""
    data = RNG.integers(0, 65536, 2000)
    path = _copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm", _with_lut(-100, data, 16, descriptor_vr="SS"))
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1 and ds.ModalityLUTSequence[0].LUTDescriptor[1] == -100
    img = read_image(path)
    assert img.shape == (1, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(img.array[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert img.meta["modality_lut"]["first_mapped"] == -100
    # the geometry is untouched by the LUT: SimpleITK's, as for the original file
    ref = read_image(bundled("CT_small.dcm"))
    np.testing.assert_allclose(img.affine, ref.affine)


def test_modality_lut_with_12_bit_entries(tmp_path):
    """LUTDescriptor may declare 8 to 16 bits per entry; pydicom only takes 8 or 16 (its
    dtype is uint<bits>), so its oracle is the same table declared as 16 bits."""
    data = RNG.integers(0, 4096, 4096)
    path = _copy(real_cr(), tmp_path / "cr.dcm", _with_lut(0, data, 12, vr="US"))
    oracle = _copy(real_cr(), tmp_path / "cr16.dcm", _with_lut(0, data, 16, vr="US"))
    ds = pydicom.dcmread(oracle)
    ref = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    img = read_image(path)
    np.testing.assert_array_equal(img.array, data.min() + data.max() - ref)


@pytest.mark.parametrize("damage,keyword", [
    (lambda item: setattr(item, "LUTDescriptor", [4096, 0]), "LUTDescriptor"),
    (lambda item: setattr(item, "LUTDescriptor", [4096, 0, 20]), "LUTDescriptor"),
    (lambda item: delattr(item, "LUTData"), "LUTData"),
    (lambda item: setattr(item, "LUTData", bytes(100)), "LUTData"),  # fewer entries than declared
    (lambda item: item.add_new("LUTData", "US", [300] * 4096), "LUTData"),  # beyond 8 bits
], ids=["two_values", "20_bits", "no_data", "short_data", "entries_beyond_bits"])
def test_damaged_modality_lut_is_refused_naming_the_keyword(tmp_path, damage, keyword):
    def edit(ds):
        _with_lut(0, np.arange(4096) % 256, 8)(ds)
        damage(ds.ModalityLUTSequence[0])

    path = _copy(real_cr(), tmp_path / "cr.dcm", edit)
    for fn in (read_image, inspect_source):
        with pytest.raises(CorruptFileError) as ei:
            fn(path)
        assert ei.value.keyword == keyword and "cr.dcm" in str(ei.value)


def test_empty_modality_lut_sequence_falls_back_to_rescale(tmp_path):
    """pydicom's rule: an empty sequence means no table; RescaleSlope/Intercept apply."""
    path = _copy(real_cr(), tmp_path / "cr.dcm", lambda ds: setattr(ds, "ModalityLUTSequence", Sequence([])))
    ds = pydicom.dcmread(path)
    img = read_image(path)
    lo, hi = img.meta["value_range"]
    np.testing.assert_allclose(img.array, lo + hi - apply_modality_lut(ds.pixel_array, ds), atol=1e-3)
    assert "rescale" in img.meta


def test_rescale_of_refuses_a_dataset_holding_a_modality_lut():
    """What the series and enhanced readers apply: they refuse rather than return stored values."""
    ds = Dataset()
    ds.ModalityLUTSequence = Sequence([_lut_item(0, np.arange(16), 16)])
    with pytest.raises(UnsupportedDataError) as ei:
        rescale_of(ds)
    assert ei.value.keyword == "ModalityLUTSequence"
    lut = modality_lut_of(ds)
    assert isinstance(lut, ModalityLut) and lut.first_mapped == 0 and len(lut.data) == 16


def test_apply_modality_lut_into_clamps_like_pydicom():
    ds = Dataset()
    ds.ModalityLUTSequence = Sequence([_lut_item(5, [7, 11, 13], 16, vr="US")])
    stored = np.array([-3, 0, 5, 6, 7, 8, 1000], np.int16)
    ours = apply_modality_lut_into(stored, np.empty(stored.shape, np.float32), modality_lut_of(ds, signed=True))
    np.testing.assert_array_equal(ours, apply_modality_lut(stored, ds))


def _series_with_lut(tmp_path: Path, *, implicit: bool, undefined_length: bool) -> Path:
    vol = np.random.default_rng(3).integers(-1000, 1000, size=(4, 8, 10)).astype(float)
    files = synth.write_dicom_series(vol, tmp_path / "s")
    for f in files:
        def edit(ds):
            _with_lut(0, np.arange(4096), 16, undefined_length=undefined_length)(ds)
            if implicit:
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        _copy(f, f, edit)
    return files[0].parent


def test_series_parsed_in_full_with_a_modality_lut_is_refused(tmp_path):
    folder = _series_with_lut(tmp_path, implicit=True, undefined_length=False)
    with pytest.raises(UnsupportedDataError) as ei:
        read_image(folder)
    assert ei.value.keyword == "ModalityLUTSequence"


@pytest.mark.parametrize("undefined_length", [False, True])
def test_series_walked_by_element_headers_with_a_modality_lut_is_refused(tmp_path, undefined_length):
    folder = _series_with_lut(tmp_path, implicit=False, undefined_length=undefined_length)
    with pytest.raises(UnsupportedDataError) as ei:
        read_image(folder)
    assert ei.value.keyword == "ModalityLUTSequence"


# -- lossy JPEG ----------------------------------------------------------------------

def test_jpeg_extended_12_bit_equals_pydicom_and_says_lossy():
    path = bundled("JPGExtended.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGExtended12Bit
    img = read_image(path)
    np.testing.assert_array_equal(img.array, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert img.meta["lossy"] is True and img.meta["compressed"] is True
    # SimpleITK (GDCM's own JPEG codec) decodes it too: same grid, values within one unit
    ref = sitk.ReadImage(path)
    assert img.spacing == pytest.approx(sitk_spacing(Path(path)))
    np.testing.assert_allclose(img.array, sitk.GetArrayFromImage(ref)[0], atol=1.0)


def test_jpeg_lossy_file_that_pydicom_cannot_decode():
    """JPEG-lossy.dcm has scan parameters libjpeg rejects (only GDCM decodes it): medmulti
    follows pydicom, the oracle, and refuses it as undecodable when pydicom cannot decode it."""
    path = bundled("JPEG-lossy.dcm")
    ds = pydicom.dcmread(path)
    try:
        expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except Exception:  # noqa: BLE001 - pydicom's verdict is the oracle
        expected = None
    if expected is None:
        with pytest.raises(CorruptFileError) as ei:
            read_image(path)
        assert ei.value.keyword == "PixelData"
    else:
        img = read_image(path)
        np.testing.assert_array_equal(img.array, expected)
        assert img.meta["lossy"] is True


def _jpeg_baseline_copy(tmp_path: Path, photometric: str) -> Path:
    """The real CR re-encoded as 8-bit JPEG baseline (Pillow), as many DX/CR exports are."""
    pil = pytest.importorskip("PIL.Image")
    from pydicom.encaps import encapsulate

    def edit(ds):
        stored = ds.pixel_array.astype(np.float64)
        eight = np.round((stored - stored.min()) / np.ptp(stored) * 255).astype(np.uint8)
        buf = io.BytesIO()
        pil.fromarray(eight).save(buf, format="JPEG", quality=70)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PhotometricInterpretation = photometric
        ds.LossyImageCompression = "01"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
        _drop(ds, "WindowCenter", "WindowWidth")

    return _copy(real_cr(), tmp_path / "cr_jpeg.dcm", edit)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_jpeg_baseline_radiograph_equals_pydicom_and_simpleitk(tmp_path, photometric):
    path = _jpeg_baseline_copy(tmp_path, photometric)
    ds = pydicom.dcmread(path)
    ref = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    img = read_image(path)
    lo, hi = img.meta["value_range"]
    expected = (lo + hi - ref) if photometric == "MONOCHROME1" else ref
    np.testing.assert_allclose(img.array, expected, atol=1e-3)
    assert img.meta["lossy"] is True and img.meta["compressed"] is True
    assert img.spacing == pytest.approx(sitk_spacing(path))
    # GDCM decodes with its own JPEG library: same values within one stored unit
    slope = float(ds.RescaleSlope)
    np.testing.assert_allclose(img.array, sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0],
                               atol=abs(slope) + 1e-3)


@pytest.mark.parametrize("name,lossy", [
    ("JPEGLSNearLossless_16.dcm", True),     # JPEG-LS near-lossless: lossy by its transfer syntax
    ("MR_small_jpeg_ls_lossless.dcm", False),
    ("693_J2KI.dcm", None),                  # JPEG 2000: the header's LossyImageCompression decides
    ("MR_small.dcm", None),
])
def test_meta_says_lossy(name, lossy):
    path = bundled(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if lossy is None:
        lossy = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    img = read_image(path)
    assert img.meta["lossy"] is lossy


def test_series_meta_says_lossy_as_its_files_do(tmp_path):
    """A series once lossy compressed (LossyImageCompression 01, stored native now)."""
    vol = np.random.default_rng(5).integers(-1000, 1000, size=(4, 8, 10)).astype(float)
    files = synth.write_dicom_series(vol, tmp_path / "s")
    for f in files:
        _copy(f, f, lambda ds: setattr(ds, "LossyImageCompression", "01"))
    assert read_image(files[0].parent).meta["lossy"] is True
    assert read_image(files[0]).meta["lossy"] is True
    plain = synth.write_dicom_series(vol, tmp_path / "plain")
    assert read_image(plain[0].parent).meta["lossy"] is False
