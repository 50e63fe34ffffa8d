"""The fast-mode pixel probe (``SourceInfo.digests["pixels_probe"]``) and ``duplicate_image``.

A study anonymised twice (new UIDs, new patient ID, identical pixels) is the leak the
probe exists for: fast validation must find it, stay quiet on a real generated cohort,
and leave the last word to deep mode's digest of all the pixels. Files are rewritten
with pydicom and nibabel, as a re-export would; which slice is the middle one is
decided with pydicom (positions along the slice normal), not with our reader.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmulti import StudySpec
from medmulti.examples.cohort import make_sample_cohort
from medmulti.examples.synth import new_uid
from medmulti.io import inspect_source
from medmulti.io.source import PROBE_BYTES
from medmulti.manifest import load_manifest, validate_manifest
from medmulti.manifest.checks import check_row

SLICES = 12
COLS = ["patient_id", "split", "diagnosis", "ct", "mr", "xray"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_sample_cohort(tmp_path_factory.mktemp("probe"), n_patients=30, seed=11, faults=False,
                              progress=False, ct_slices=SLICES)


def _rows(cohort) -> list[dict]:
    lines = [ln for ln in cohort.manifest.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _write(root: Path, name: str, rows: list[dict]) -> Path:
    path = root / name
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLS})
    return path


def _errors(report) -> set[tuple]:
    return {(p.patient_id, p.modality, p.check) for p in report.problems if p.severity == "error"}


def _reexport_series(src: Path, dst: Path, patient_id: str) -> list[Path]:
    """Copy a CT series as a second anonymisation would: new patient ID and UIDs, same pixels.

    Returns the new files in slice order (ascending position along the slice normal, by pydicom).
    """
    dst.mkdir(parents=True)
    study, series, frame = new_uid(), new_uid(), new_uid()
    placed = []
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = patient_id, f"SYNTHETIC^{patient_id}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
        ds.save_as(dst / f.name, enforce_file_format=True)
        iop = np.array(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        placed.append((float(np.dot(normal, np.array(ds.ImagePositionPatient, float))), dst / f.name))
    return [p for _, p in sorted(placed)]


def _bump_pixel(path: Path, index: int = 0) -> None:
    """Add 1 to one stored pixel value (flat index) and save the file."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array.copy()
    arr.flat[index] += 1
    ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)


# -- (1) no false positives on real generated data ------------------------------------------


def test_sample_cohort_has_no_duplicate_image(cohort):
    report = validate_manifest(cohort.manifest, cohort.spec, workers=1, progress=False)
    assert not [p for p in report.problems if p.check == "duplicate_image"]
    assert report.ok
    # the probe was taken for every input (so the quiet result above means something)
    spec = StudySpec.from_yaml(cohort.spec)
    man = load_manifest(cohort.manifest, spec, strict=False)
    probes = [ident["pixels_probe"] for row in man for ident in check_row(row, spec).identity.values()]
    assert len(probes) == 3 * 30 and all(probes)
    assert len(set(probes)) == len(probes)


# -- (2) a CT series re-exported under another patient ---------------------------------------


def test_reexported_ct_series_is_found_in_fast_mode(cohort):
    rows = _rows(cohort)[:2]
    c, d = rows[0]["patient_id"], rows[1]["patient_id"]
    _reexport_series(cohort.root / rows[0]["ct"], cohort.root / "reexport" / "ct", d)
    rows[1]["ct"] = "reexport/ct"
    m = _write(cohort.root, "reexport.csv", rows)
    fast = validate_manifest(m, cohort.spec, workers=1, progress=False)
    assert _errors(fast) == {(c, "ct", "duplicate_image"), (d, "ct", "duplicate_image")}
    assert all("the same image (sampled pixels)" in p.message for p in fast.errors)
    # the UIDs are new: no same_study_two_patients; deep mode agrees on the duplicate
    deep = validate_manifest(m, cohort.spec, workers=1, progress=False, deep=True)
    assert _errors(deep) == {(c, "ct", "duplicate_image"), (d, "ct", "duplicate_image")}
    assert all("the same image (all pixels)" in p.message for p in deep.errors)


# -- (3) what the probe samples, and deep mode's last word -------------------------------------


def test_one_pixel_inside_and_outside_the_probe(cohort):
    rows = _rows(cohort)[2:4]
    c, d = rows[0]["patient_id"], rows[1]["patient_id"]
    # inside: one pixel of the middle slice (a 64x64 int16 slice is probed whole)
    inside = _reexport_series(cohort.root / rows[0]["ct"], cohort.root / "inside" / "ct", d)
    assert pydicom.dcmread(inside[0]).Rows * pydicom.dcmread(inside[0]).Columns * 2 <= PROBE_BYTES
    _bump_pixel(inside[len(inside) // 2], index=5)
    rows[1]["ct"] = "inside/ct"
    m = _write(cohort.root, "inside.csv", rows)
    for deep in (False, True):
        assert _errors(validate_manifest(m, cohort.spec, workers=1, progress=False, deep=deep)) == set()
    # outside: one pixel of the first slice; the probe cannot see it, all the pixels can
    outside = _reexport_series(cohort.root / rows[0]["ct"], cohort.root / "outside" / "ct", d)
    _bump_pixel(outside[0], index=5)
    rows[1]["ct"] = "outside/ct"
    m = _write(cohort.root, "outside.csv", rows)
    fast = validate_manifest(m, cohort.spec, workers=1, progress=False)
    assert _errors(fast) == {(c, "ct", "duplicate_image"), (d, "ct", "duplicate_image")}
    deep = validate_manifest(m, cohort.spec, workers=1, progress=False, deep=True)
    assert _errors(deep) == set()


def test_probe_window_is_the_middle_of_the_pixel_data(tmp_path):
    # pydicom's deflated 512x512 8-bit image: 256 KiB of pixel data, 64 KiB of it probed
    src = Path(get_testdata_file("image_dfl.dcm"))
    ds = pydicom.dcmread(src)
    n = len(ds.PixelData)
    assert n > PROBE_BYTES
    first = (n - PROBE_BYTES) // 2  # first probed byte (8-bit: byte index == pixel index)
    base = inspect_source(src, deep=True).digests
    copy = tmp_path / "copy.dcm"
    ds.PatientID, ds.StudyInstanceUID = "OTHER", new_uid()
    ds.save_as(copy)  # re-deflated by pydicom: the file differs, the pixel bytes do not
    assert copy.read_bytes() != src.read_bytes()
    assert inspect_source(copy).digests["pixels_probe"] == base["pixels_probe"]
    for index, seen in ((first - 1, False), (first, True), (first + PROBE_BYTES - 1, True),
                        (first + PROBE_BYTES, False)):
        f = tmp_path / f"px{index}.dcm"
        shutil.copy(copy, f)
        _bump_pixel(f, index)
        got = inspect_source(f, deep=True).digests
        assert (got["pixels_probe"] != base["pixels_probe"]) is seen, index
        assert got["pixels"] != base["pixels"]  # the full digest sees every change


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_probe_of_pydicom_files(tmp_path, name):
    # native, RLE and JPEG 2000 (encapsulated): a re-export with new identity matches; other
    # stored pixel bytes, or another image of pydicom's, do not
    src = Path(get_testdata_file(name))
    ds = pydicom.dcmread(src)
    probe = inspect_source(src).digests["pixels_probe"]
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID, ds.SeriesInstanceUID = "X", "Y^Z", new_uid(), new_uid()
    ds.save_as(tmp_path / "same.dcm")
    assert inspect_source(tmp_path / "same.dcm").digests["pixels_probe"] == probe
    data = bytearray(ds.PixelData)
    mid = len(data) // 2
    data[mid] ^= 0xFF
    ds.PixelData = bytes(data)
    ds.save_as(tmp_path / "other.dcm")
    assert inspect_source(tmp_path / "other.dcm").digests["pixels_probe"] != probe
    others = {inspect_source(get_testdata_file(o)).digests["pixels_probe"]
              for o in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small.dcm") if o != name}
    assert probe not in others


# -- (4) NIfTI: a byte-identical copy matches, a re-compressed one only in deep mode ---------------


def test_nifti_gz_copy_under_another_patient(cohort):
    rows = _rows(cohort)[4:6]
    c, d = rows[0]["patient_id"], rows[1]["patient_id"]
    (cohort.root / "niicopy").mkdir()
    shutil.copyfile(cohort.root / rows[0]["mr"], cohort.root / "niicopy" / "mr.nii.gz")
    rows[1]["mr"] = "niicopy/mr.nii.gz"
    m = _write(cohort.root, "niicopy.csv", rows)
    fast = validate_manifest(m, cohort.spec, workers=1, progress=False)
    assert _errors(fast) == {(c, "mr", "duplicate_image"), (d, "mr", "duplicate_image")}
    # re-compressed (gzip level 6; the cohort writes level 1): the same voxels (nibabel says so), other file bytes
    re_gz = cohort.root / "niicopy" / "re.nii.gz"
    re_gz.write_bytes(gzip.compress(gzip.decompress((cohort.root / rows[0]["mr"]).read_bytes()), compresslevel=6))
    assert re_gz.read_bytes() != (cohort.root / rows[0]["mr"]).read_bytes()
    np.testing.assert_array_equal(np.asanyarray(nib.load(re_gz).dataobj),
                                  np.asanyarray(nib.load(cohort.root / rows[0]["mr"]).dataobj))
    rows[1]["mr"] = "niicopy/re.nii.gz"
    m = _write(cohort.root, "nii_recompressed.csv", rows)
    assert _errors(validate_manifest(m, cohort.spec, workers=1, progress=False)) == set()
    deep = validate_manifest(m, cohort.spec, workers=1, progress=False, deep=True)
    assert _errors(deep) == {(c, "mr", "duplicate_image"), (d, "mr", "duplicate_image")}
