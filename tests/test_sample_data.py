"""The sample cohort: real files (SimpleITK/pydicom/nibabel read them), findings visible
in exactly the modality they belong to, labels from the findings, deterministic splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medmulti.examples.cohort import BLOB_HU, TISSUE_HU, make_sample_cohort, sample_spec
from medmulti.manifest import load_manifest
from medmulti.spec import StudySpec

N = 10


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return make_sample_cohort(tmp_path_factory.mktemp("clean"), n_patients=N, seed=3, faults=False, progress=False)


def _findings(cohort) -> dict[str, dict[str, str]]:
    with open(cohort.findings, newline="") as fh:
        return {r["patient_id"]: r for r in csv.DictReader(fh)}


def _ct_hu(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_manifest_spec_and_truth_are_consistent(clean):
    man = load_manifest(clean.manifest, clean.spec)  # strict: a clean cohort loads without error
    assert [r.patient_id for r in man] == clean.patient_ids
    assert json.loads(clean.faults.read_text()) == []
    truth = _findings(clean)
    for row in man:
        f = truth[row.patient_id]
        n_found = int(f["ct_blob"]) + int(f["mr_lesion"]) + int(f["xray_opacity"])
        assert row.labels["diagnosis"] == ("disease" if n_found >= 2 else "healthy")
        assert all(row.sources[m] is not None and row.sources[m].exists() for m in ("ct", "mr", "xray"))
    assert {r.split for r in man} <= {"train", "val", "test"}
    assert len(man.split("train")) >= N // 2


def test_spec_file_equals_code_and_repository_copy(clean):
    repo = Path(__file__).resolve().parents[1] / "data_manifests" / "sample_spec.yaml"
    assert StudySpec.from_yaml(clean.spec).to_dict() == sample_spec().to_dict()
    assert StudySpec.from_yaml(repo).to_dict() == sample_spec().to_dict()


def test_ct_series_is_real_dicom_in_hu(clean):
    pid = clean.patient_ids[0]
    folder = clean.root / pid / "ct"
    img = _ct_hu(folder)
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == (40, 64, 64)
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
               "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
               "RescaleIntercept", "WindowCenter", "WindowWidth", "ImageType", "PatientPosition"):
        assert kw in ds, kw
    assert ds.Modality == "CT" and ds.PatientID == pid and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # pydicom's modality LUT and SimpleITK agree, and the body centre is soft tissue
    hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert np.median(arr) < -900  # mostly air around the body
    body = arr[arr > -500]
    assert abs(np.median(body) - TISSUE_HU) < 15
    np.testing.assert_allclose(hu, arr[0])  # IM0000 is the lowest slice, first along the normal


def test_findings_visible_only_in_their_modality(clean):
    truth = _findings(clean)
    for pid in clean.patient_ids:
        f = truth[pid]
        ct = sitk.GetArrayFromImage(_ct_hu(clean.root / pid / "ct"))
        blob_voxels = int(((ct > (TISSUE_HU + BLOB_HU) / 2 + 15) & (ct < 300)).sum())
        assert (blob_voxels > 25) == bool(int(f["ct_blob"])), (pid, blob_voxels)
        mr = np.asanyarray(nib.load(clean.root / pid / "mr.nii.gz").dataobj)
        lesion_voxels = int((mr > 520).sum())
        assert (lesion_voxels > 15) == bool(int(f["mr_lesion"])), (pid, lesion_voxels)
        ds = pydicom.dcmread(clean.root / pid / "xray.dcm")
        x = ds.pixel_array.astype(np.float64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            x = (2 ** ds.BitsStored - 1) - x
        # the projection is left-right symmetric about the body centre except for the opacity
        asym = np.abs(x - x[:, ::-1])
        k = np.ones(5) / 5
        smooth = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, asym)
        smooth = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, smooth)
        assert (smooth.max() > 150) == bool(int(f["xray_opacity"])), (pid, smooth.max())


def test_mr_is_sagittal_nifti_in_another_field_of_view(clean):
    pid = clean.patient_ids[1]
    mr = nib.load(clean.root / pid / "mr.nii.gz")
    ct = _ct_hu(clean.root / pid / "ct")
    codes = nib.aff2axcodes(mr.affine)
    assert codes[2] in ("L", "R")  # slices stacked left-right: sagittal
    assert mr.shape != tuple(reversed(ct.GetSize()))
    sitk_mr = sitk.ReadImage(str(clean.root / pid / "mr.nii.gz"))
    assert sitk_mr.GetSize() == mr.shape  # SimpleITK reads the same file


def test_xrays_are_dx_and_cr_some_monochrome1(clean):
    seen = set()
    for pid in clean.patient_ids:
        ds = pydicom.dcmread(clean.root / pid / "xray.dcm")
        assert ds.Modality in ("DX", "CR")
        assert "ImagerPixelSpacing" in ds and ds.pixel_array.shape == (96, 96)
        seen.add((ds.Modality, ds.PhotometricInterpretation))
        sitk.ReadImage(str(clean.root / pid / "xray.dcm"))
    assert {m for m, _ in seen} == {"DX", "CR"}
    assert {p for _, p in seen} == {"MONOCHROME1", "MONOCHROME2"}


def test_same_seed_same_content(clean, tmp_path):
    again = make_sample_cohort(tmp_path / "again", n_patients=3, seed=3, faults=False, progress=False)
    for pid in again.patient_ids:
        a = sitk.GetArrayFromImage(_ct_hu(again.root / pid / "ct"))
        b = sitk.GetArrayFromImage(_ct_hu(clean.root / pid / "ct"))
        np.testing.assert_array_equal(a, b)
    other = make_sample_cohort(tmp_path / "other", n_patients=1, seed=4, faults=False, progress=False)
    pid = other.patient_ids[0]
    assert not np.array_equal(sitk.GetArrayFromImage(_ct_hu(other.root / pid / "ct")),
                              sitk.GetArrayFromImage(_ct_hu(clean.root / pid / "ct")))


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_sample_cohort(tmp_path / "few", n_patients=5, faults=True, progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        make_sample_cohort(tmp_path / "full", n_patients=1, faults=False, progress=False)
