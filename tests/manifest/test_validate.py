"""validate_manifest and ``medmulti validate`` on real files.

Every check fires on the fault it is for and stays quiet on clean data; the fault
cohort gives exactly its faults.json; pydicom's real test files (including the
multi-patient ``dicomdirtests`` tree) give the findings their headers imply.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmulti.cli import main
from medmulti.examples.cohort import FAULT_KINDS, make_sample_cohort
from medmulti.examples.synth import affine_from_geometry, new_uid, write_dicom_series
from medmulti.manifest import load_manifest, sha256_of, validate_manifest
from medmulti.manifest.checks import check_row

SLICES = 12  # thin cohorts keep the tests fast
COLS = ["patient_id", "split", "diagnosis", "ct", "mr", "xray"]


def errors(report) -> set[tuple]:
    return {(p.patient_id, p.modality, p.check) for p in report.problems if p.severity == "error"}


def warnings(report) -> set[str]:
    return {p.check for p in report.problems if p.severity == "warning"}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return make_sample_cohort(tmp_path_factory.mktemp("faulty"), n_patients=12, seed=7, faults=True, progress=False,
                              ct_slices=SLICES)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return make_sample_cohort(tmp_path_factory.mktemp("clean"), n_patients=10, seed=5, faults=False, progress=False,
                              ct_slices=SLICES)


def _rows(cohort) -> list[dict]:
    lines = [ln for ln in cohort.manifest.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _write(root: Path, name: str, rows: list[dict], extra_cols: tuple = ()) -> Path:
    path = root / name
    cols = COLS + [c for c in extra_cols if c not in COLS]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


# -- the sample cohorts ---------------------------------------------------------------


def test_fault_cohort_gives_exactly_faults_json(faulty, tmp_path, capsys):
    recs = faulty.fault_records()
    assert sorted(r["fault"] for r in recs) == sorted(FAULT_KINDS)
    assert len({r["patient_id"] for r in recs}) == len(recs)
    expected = {(r["patient_id"], r["modality"], r["check"]) for r in recs}
    # the CLI (2 worker processes): exit 1, every fault in --json and nothing else, HTML with thumbnails
    out_json, out_html = tmp_path / "p.json", tmp_path / "r.html"
    rc = main(["validate", str(faulty.manifest), "--spec", str(faulty.spec), "--workers", "2", "--no-progress",
               "--json", str(out_json), "--html", str(out_html)])
    assert rc == 1
    records = json.loads(out_json.read_text())
    assert {(r["patient_id"], r["modality"], r["check"]) for r in records if r["severity"] == "error"} == expected
    assert {r["check"] for r in records if r["severity"] == "warning"} <= {"tiny_split", "class_imbalance", "one_class_split"}
    out = capsys.readouterr().out
    assert f"with errors: {len(expected)}" in out
    for pid, modality, check in expected:  # one line per problem: patient_id  modality  path  check  what to do
        assert any(line.startswith(f"{pid}  {modality or '-'}  ") and f"  {check}  " in line
                   for line in out.splitlines())
    html = out_html.read_text()
    assert html.count("data:image/png;base64,") == 12  # one per patient: each has a readable modality
    assert all(check in html for _, _, check in expected)


def test_clean_cohort_is_ok(clean, capsys):
    report = validate_manifest(clean.manifest, clean.spec, workers=2, progress=False)
    assert errors(report) == set()
    assert report.ok
    assert warnings(report) <= {"tiny_split", "class_imbalance", "one_class_split"}
    assert report.n_files == 10 * (SLICES + 2)  # CT slices, 1 MR, 1 X-ray per patient


def test_cli_exit_zero_when_clean(clean, tmp_path, capsys):
    rows = _rows(clean)[:2]
    m = _write(clean.root, "two.csv", rows)
    assert main(["validate", str(m), "--spec", str(clean.spec), "--workers", "1", "--no-progress",
                 "--json", str(tmp_path / "p.json")]) == 0
    assert "with errors: 0" in capsys.readouterr().out
    assert all(r["severity"] == "warning" for r in json.loads((tmp_path / "p.json").read_text()))


# -- each check on its own fault -----------------------------------------------------------


def test_row_cell_checks(clean):
    rows = _rows(clean)[:6]
    rows[0]["split"] = "validation"
    rows[0]["ct_sha256"] = "not-a-digest"
    rows[1]["diagnosis"] = "Disease"
    rows[2]["mr"] = ""
    rows[3]["ct"] = "SYN9999/ct"  # does not exist
    rows[4]["xray"] = "../../xray.dcm"
    dup = dict(rows[5])
    m = _write(clean.root, "cells.csv", rows + [dup], extra_cols=("ct_sha256",))
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    p = [r["patient_id"] for r in rows]
    assert errors(report) == {
        (p[0], None, "bad_split"),
        (p[0], "ct", "bad_sha256"),
        (p[1], None, "unknown_label"),
        (p[2], "mr", "missing_modality"),
        (p[3], "ct", "missing_file"),
        (p[4], "xray", "unsafe_path"),
        (p[5], None, "duplicate_row"),
    }


def test_sha256_pins(clean):
    rows = _rows(clean)[:3]
    ct_dir = clean.root / rows[0]["ct"]
    # oracle: coreutils over the documented recipe
    listing = subprocess.run(
        "find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum",
        shell=True, cwd=ct_dir, capture_output=True, text=True, check=True).stdout.split()[0]
    assert sha256_of(ct_dir) == listing
    xr = clean.root / rows[1]["xray"]
    assert sha256_of(xr) == subprocess.run(["sha256sum", str(xr)], capture_output=True, text=True,
                                           check=True).stdout.split()[0]
    rows[0]["ct_sha256"] = listing
    rows[1]["xray_sha256"] = sha256_of(xr).upper()  # case does not matter
    rows[2]["ct_sha256"] = "0" * 64
    m = _write(clean.root, "sha.csv", rows, extra_cols=("ct_sha256", "xray_sha256"))
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(report) == {(rows[2]["patient_id"], "ct", "sha256_mismatch")}


def test_reader_errors_map_to_checks(clean, tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    rows = _rows(clean)[:5]
    for r in rows:
        shutil.copytree(clean.root / r["patient_id"], root / r["patient_id"])
    # a NIfTI header declaring 2**30 voxels over a few bytes of data
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((1024, 1024, 1024))
    hdr["vox_offset"] = 352
    (root / "bomb.nii").write_bytes(hdr.binaryblock + b"\0" * 68)
    rows[4]["mr"] = "bomb.nii"
    shutil.copy(get_testdata_file("MR_truncated.dcm"), root / "trunc.dcm")
    shutil.copy(get_testdata_file("rtplan.dcm"), root / "rtplan.dcm")
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "mr_small.dcm")
    rows[0]["mr"] = "trunc.dcm"  # truncated real file
    rows[1]["xray"] = "rtplan.dcm"  # not an image
    rows[2]["ct"] = "mr_small.dcm"  # an MR in the CT column
    ct3 = sorted((root / rows[3]["patient_id"] / "ct").iterdir())
    ct3[5].unlink()  # a gap
    m = _write(root, "m.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    p = [r["patient_id"] for r in rows]
    assert errors(report) == {
        (p[0], "mr", "corrupt_file"),
        (p[1], "xray", "unsupported_data"),
        (p[2], "ct", "modality_mismatch"),
        (p[2], "ct", "not_a_volume"),  # and one slice where the spec wants a 3D CT
        (p[2], "xray", "patient_identity"),  # pydicom's MR is another patient than the row's X-ray
        (p[3], "ct", "series_geometry"),
        (p[4], "mr", "resource_limit"),
    }
    # an X-ray in the CT column is both the wrong modality and the wrong dimensionality
    rows = _rows(clean)[:1]
    rows[0]["ct"] = rows[0]["xray"]
    m = _write(clean.root, "xr_in_ct.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(report) == {(rows[0]["patient_id"], "ct", "modality_mismatch"),
                              (rows[0]["patient_id"], "ct", "wrong_dims")}


def _copy_xray(src: Path, dst: Path, *, patient_id: str, new_uids: bool, change_pixels: bool) -> None:
    ds = pydicom.dcmread(src)
    ds.PatientID = patient_id
    ds.PatientName = f"SYNTHETIC^{patient_id}"
    if new_uids:
        ds.StudyInstanceUID = new_uid()
        ds.SeriesInstanceUID = new_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    if change_pixels:
        arr = ds.pixel_array.copy()
        arr[0, 0] ^= 1
        ds.PixelData = arr.tobytes()
    ds.save_as(dst, enforce_file_format=True)


def test_identity_checks(clean, tmp_path):
    rows = _rows(clean)[:4]
    a, b, c, d = (r["patient_id"] for r in rows)
    # a: X-ray of patient b in a's row (header identity disagrees with a's CT); the same file, so
    # the same image too (found by the fast-mode pixel probe)
    rows[0]["xray"] = rows[1]["xray"]
    m = _write(clean.root, "identity.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(report) == {(a, "xray", "patient_identity"), (a, "xray", "same_study_two_patients"),
                              (b, "xray", "same_study_two_patients"), (a, "xray", "duplicate_image"),
                              (b, "xray", "duplicate_image")}
    # c's X-ray re-exported under d's identity with new UIDs: only the pixels match -> the probe
    # finds it in fast mode, the full pixel digest in deep mode
    rows = _rows(clean)[:4]
    _copy_xray(clean.root / rows[2]["xray"], clean.root / "d_copy.dcm", patient_id=d, new_uids=True,
               change_pixels=False)
    rows[3]["xray"] = "d_copy.dcm"
    rows[2]["split"], rows[3]["split"] = "train", "test"
    m = _write(clean.root, "dupimage.csv", rows[2:])
    fast = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(fast) == {(c, "xray", "duplicate_image"), (d, "xray", "duplicate_image")}
    assert all("the same image (sampled pixels)" in p.message and "another split" in p.message
               for p in fast.errors)
    deep = validate_manifest(m, clean.spec, workers=1, progress=False, deep=True)
    assert errors(deep) == {(c, "xray", "duplicate_image"), (d, "xray", "duplicate_image")}
    assert all("the same image (all pixels)" in p.message and "another split" in p.message for p in deep.errors)
    # same study UID under another patient, different pixels (the X-ray is probed whole):
    # same_study_two_patients only, in both modes
    _copy_xray(clean.root / rows[2]["xray"], clean.root / "d_study.dcm", patient_id=d, new_uids=False,
               change_pixels=True)
    rows[3]["xray"] = "d_study.dcm"
    m = _write(clean.root, "samestudy.csv", rows[2:])
    for deep_mode in (False, True):
        report = validate_manifest(m, clean.spec, workers=1, progress=False, deep=deep_mode)
        assert errors(report) == {(c, "xray", "same_study_two_patients"), (d, "xray", "same_study_two_patients")}


def test_patient_in_two_splits_and_warnings(clean, tmp_path):
    rows = _rows(clean)[:6]
    for r in rows:
        r["diagnosis"] = "healthy"
    rows[0]["diagnosis"] = "disease"
    rows[0]["split"], rows[1]["split"] = "train", "val"
    leak = dict(rows[1], split="test")
    m = _write(clean.root, "leak.csv", rows + [leak])
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(report) == {(rows[1]["patient_id"], None, "patient_in_two_splits")}
    assert "class_imbalance" in warnings(report)
    # warnings alone do not fail
    m = _write(clean.root, "imbalanced.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert report.ok and warnings(report) == {"class_imbalance", "tiny_split", "one_class_split"}


def test_anisotropic_spacing_warns(clean):
    rows = _rows(clean)[:1]
    vol = np.zeros((6, 16, 16), np.float32)
    write_dicom_series(vol, clean.root / "aniso", affine=affine_from_geometry((10.0, 0.7, 0.7)))
    rows[0]["ct"] = "aniso"
    m = _write(clean.root, "aniso.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False)
    aniso = [p for p in report.problems if p.check == "anisotropic_spacing"]
    assert [(p.modality, p.severity) for p in aniso] == [("ct", "warning")]
    # the synthetic series carries identity "ANON" while the X-ray carries the pseudonym
    assert errors(report) == {(rows[0]["patient_id"], "xray", "patient_identity")}


def test_no_header_value_reaches_the_report(clean, tmp_path):
    canary = "CANARY7731"
    rows = _rows(clean)[:2]
    folder = tmp_path / "c"
    shutil.copytree(clean.root / rows[0]["patient_id"], folder / rows[0]["patient_id"])
    shutil.copytree(clean.root / rows[1]["patient_id"], folder / rows[1]["patient_id"])
    ct = sorted((folder / rows[0]["ct"]).iterdir())
    for f in ct[:3]:  # three slices claim another patient with canary identity values
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID = canary, canary + "^NAME", "1.2.3." + canary[-4:]
        ds.save_as(f)
    xr = folder / rows[1]["xray"]
    ds = pydicom.dcmread(xr)
    ds.PatientID = canary
    ds.save_as(xr)
    m = _write(folder, "m.csv", rows)
    report = validate_manifest(m, clean.spec, workers=1, progress=False, thumbnails=True)
    assert errors(report) == {(rows[0]["patient_id"], "ct", "patient_identity"),
                              (rows[1]["patient_id"], "xray", "patient_identity")}
    text = report.to_json(tmp_path / "p.json").read_text() + report.to_html(tmp_path / "r.html").read_text()
    text += str(report)
    assert canary not in text and canary[-4:] not in text


# -- pydicom's multi-patient dicomdirtests tree -------------------------------------------------


def test_dicomdirtests_tree(tmp_path, spec):
    src = Path(get_testdata_file("DICOMDIR")).parent
    root = tmp_path / "tree"
    shutil.copytree(src, root)
    rows = [
        {"patient_id": "P1", "split": "train", "diagnosis": "healthy", "ct": "77654033/CT2", "xray": "77654033/CR1"},
        {"patient_id": "P2", "split": "train", "diagnosis": "disease", "ct": "98892001/CT5N",
         "mr": "98892003/MR700"},
        {"patient_id": "P3", "split": "val", "diagnosis": "healthy", "ct": "98892001/CT2N"},
        {"patient_id": "P4", "split": "val", "diagnosis": "disease", "mr": "98892003/MR1"},
        {"patient_id": "P5", "split": "test", "diagnosis": "healthy", "ct": "98892001/CT5N",
         "xray": "77654033/CR2"},
        {"patient_id": "P6", "split": "test", "diagnosis": "disease", "ct": "77654033/CR3",
         "xray": "TINY_ALPHA/PT000000/ST000000/SE000000"},
    ]
    m = _write(root, "manifest.csv", rows)
    report = validate_manifest(m, spec, workers=1, progress=False)
    # expectations from the headers (see pydicom's dicomdirtests): CT2 has a 200 mm gap between
    # its first slice and the others, CT2N and MR700 mix orientations, MR1 holds 3 series of one
    # patient; CT5N is a regular 5-slice series of patient 98890234; CR1-3 are single CRs of patient
    # 77654033 in one study; TINY_ALPHA holds images without pixel data.
    assert errors(report) == {
        ("P1", "ct", "series_geometry"),
        ("P2", "mr", "series_geometry"),
        ("P3", "ct", "series_geometry"),
        ("P4", "mr", "series_geometry"),
        ("P4", "ct", "missing_modality"),
        ("P5", "xray", "patient_identity"),  # CT of patient 98890234, CR of patient 77654033
        ("P2", "ct", "same_study_two_patients"),  # CT5N listed under P2 and P5
        ("P5", "ct", "same_study_two_patients"),
        ("P2", "ct", "duplicate_image"),  # ... the same files, so the same image (fast-mode pixel probe)
        ("P5", "ct", "duplicate_image"),
        ("P1", "xray", "same_study_two_patients"),  # CR1, CR2, CR3: one study, three patients here
        ("P5", "xray", "same_study_two_patients"),
        ("P6", "ct", "same_study_two_patients"),
        ("P6", "ct", "modality_mismatch"),  # a CR in the CT column
        ("P6", "ct", "wrong_dims"),
        ("P6", "xray", "corrupt_file"),  # image objects without PixelData
        # one person under two keys in two splits: P2/P5 (train/test) both hold 98890234's CT,
        # P1's CR1 and P6's CR3 (train/test) are both 77654033's; P5's CR2 is left out (not the row's patient)
        ("P2", "ct", "same_person_two_keys"),
        ("P5", "ct", "same_person_two_keys"),
        ("P1", "xray", "same_person_two_keys"),
        ("P6", "ct", "same_person_two_keys"),
    }
    # the oracle for the identities: pydicom's reading of the headers
    pid = {rel: pydicom.dcmread(sorted(p for p in (root / rel).iterdir() if p.is_file())[0],
                                stop_before_pixels=True).PatientID
           for rel in ("98892001/CT5N", "77654033/CR1", "77654033/CR3", "77654033/CT2")}
    assert pid["98892001/CT5N"] != pid["77654033/CR1"] == pid["77654033/CR3"] == pid["77654033/CT2"]
    # the check is a pure function of (row, spec): the same problems row by row
    man = load_manifest(m, spec, strict=False)
    row_checks = {(p.patient_id, p.modality, p.check) for r in man for p in check_row(r, spec).problems
                  if p.severity == "error"}
    cross = {"same_study_two_patients", "duplicate_image", "same_person_two_keys"}
    assert row_checks == {e for e in errors(report) if e[2] not in cross}


# -- CLI usage errors ----------------------------------------------------------------------------------


def test_cli_usage_errors(clean, tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.csv"), "--spec", str(clean.spec)]) == 2
    assert main(["validate", str(clean.manifest), "--spec", str(tmp_path / "none.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\nmodalities: []\nlabels: {column: d, classes: [a, b]}\n")
    assert main(["validate", str(clean.manifest), "--spec", str(bad)]) == 2
    assert main(["validate", str(clean.manifest), "--spec", str(clean.spec), "--workers", "0"]) == 2
    assert main(["validate", str(clean.manifest)]) == 2  # --spec is required
    broken = tmp_path / "broken.csv"
    broken.write_text("patient_id,split\np1,train\n")
    assert main(["validate", str(broken), "--spec", str(clean.spec)]) == 2
    err = capsys.readouterr().err
    assert "required column is missing" in err


def test_data_root_admits_paths_outside_the_manifest_folder(clean, tmp_path):
    rows = _rows(clean)[:2]
    for r in rows:
        for m in ("ct", "mr", "xray"):
            r[m] = f"../{r[m]}"
    (clean.root / "manifests").mkdir(exist_ok=True)
    m = _write(clean.root / "manifests", "m.csv", rows)
    refused = validate_manifest(m, clean.spec, workers=1, progress=False)
    assert errors(refused) == {(r["patient_id"], mod, "unsafe_path") for r in rows for mod in ("ct", "mr", "xray")}
    assert main(["validate", str(m), "--spec", str(clean.spec), "--workers", "1", "--no-progress",
                 "--data-root", str(clean.root)]) == 0
