"""The checks admission added for real cohorts: the same person under two keys, rows with no
image, single slices / localizers for a 3D modality, field-of-view coverage, rows without their
reference, one-class splits. Identities are read back with pydicom (the oracle) and must
appear nowhere in the reports.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medmulti.cli import main
from medmulti.examples.cohort import make_sample_cohort
from medmulti.manifest import admit, load_manifest, validate_manifest
from medmulti.spec import StudySpec


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("adm") / "cohort"
    make_sample_cohort(root, 6, seed=3, faults=False, progress=False)
    return root


def _rows(root: Path) -> list[dict[str, str]]:
    lines = [ln for ln in (root / "manifest.csv").read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))


def _write(root: Path, name: str, rows: list[dict[str, str]]) -> Path:
    cols = list(rows[0])
    path = root / name
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    return path


def _reexport(src: Path, dst: Path) -> None:
    """Copy a patient's studies as a re-export: new UIDs, pixels changed by one, same person."""
    study = generate_uid()
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.name.endswith(".nii.gz"):
            img = nib.load(f)
            data = np.asarray(img.dataobj) + 1
            nib.save(nib.Nifti1Image(data.astype(img.get_data_dtype()), img.affine, img.header), out)
            continue
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(f.parent), study])
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        arr = ds.pixel_array
        ds.PixelData = (arr + 1).astype(arr.dtype).tobytes()
        ds.save_as(out)


def _same_person_manifest(root: Path, split: str) -> tuple[Path, str, str]:
    rows = _rows(root)
    orig = rows[0]
    src = root / orig["patient_id"]
    twin = "TWIN" + split
    if not (root / twin).exists():
        _reexport(src, root / twin)
    new = dict(orig, patient_id=twin, split=split)
    for m in ("ct", "mr", "xray"):
        new[m] = orig[m].replace(orig["patient_id"], twin, 1)
    return _write(root, f"twin_{split}.csv", rows + [new]), orig["patient_id"], twin


def test_same_person_under_two_keys(cohort, tmp_path):
    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    orig_split = _rows(cohort)[0]["split"]
    other = "test" if orig_split != "test" else "train"
    m, orig, twin = _same_person_manifest(cohort, other)
    report = validate_manifest(m, spec, workers=1, progress=False)
    errors = {(p.patient_id, p.modality, p.check) for p in report.errors}
    assert {(orig, "ct", "same_person_two_keys"), (twin, "ct", "same_person_two_keys"),
            (orig, "xray", "same_person_two_keys"), (twin, "xray", "same_person_two_keys")} <= errors
    # new UIDs and changed pixels: the older checks do not see it
    assert not {c for _, _, c in errors} & {"same_study_two_patients", "duplicate_image"}
    msg = next(p.message for p in report.errors if p.patient_id == orig and p.check == "same_person_two_keys")
    assert twin in msg
    # in one split: a warning
    m1, _, twin1 = _same_person_manifest(cohort, orig_split)
    report = validate_manifest(m1, spec, workers=1, progress=False)
    assert not [p for p in report.errors if p.check.startswith("same_person")]
    assert {(p.patient_id, p.check) for p in report.warnings if p.check == "same_person_one_split"} >= {
        (orig, "same_person_one_split"), (twin1, "same_person_one_split")}
    # and the sequence keeps the verdict: under skip both keys are left out of their splits
    man = load_manifest(m, spec, strict=False)
    adm = admit(man, spec, on_missing="skip", on_corrupt="skip", progress=False)
    assert adm.verdict(orig).status == adm.verdict(twin).status == "skipped"


def test_no_identity_value_reaches_a_report(cohort, tmp_path):
    spec_path = cohort / "spec.yaml"
    orig_split = _rows(cohort)[0]["split"]
    m, orig, twin = _same_person_manifest(cohort, "test" if orig_split != "test" else "train")
    ds = pydicom.dcmread(next((cohort / orig / "ct").iterdir()), stop_before_pixels=True)
    values = [str(ds.PatientID), str(ds.PatientName), str(ds.PatientBirthDate),
              str(ds.PatientName).replace("^", " ")]
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    rc = main(["validate", str(m), "--spec", str(spec_path), "--workers", "1", "--no-progress",
               "--json", str(out_json), "--html", str(out_html)])
    assert rc == 1
    records = json.loads(out_json.read_text())
    assert any(r["check"] == "same_person_two_keys" for r in records)
    for text in (out_json.read_text(), out_html.read_text()):
        for v in values:
            if v != orig:  # the sample cohort's PatientID equals its manifest key, which reports do name
                assert v not in text, v


def test_rows_single_slices_localizers_coverage_reference(cohort, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(cohort, root, ignore=shutil.ignore_patterns("TWIN*", "twin_*"))
    rows = _rows(root)[:5]
    p = [r["patient_id"] for r in rows]
    # 0: no image at all
    rows[0].update(ct="", mr="", xray="")
    # 1: one CT slice as the 3D CT
    one = root / p[1] / "one"
    one.mkdir()
    shutil.copy(sorted((root / p[1] / "ct").iterdir())[0], one / "IM0001.dcm")
    rows[1]["ct"] = f"{p[1]}/one"
    # 2: the CT series marked as a localizer
    for f in (root / p[2] / "ct").iterdir():
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.save_as(f)
    # 3: the MR moved 2 m away from the CT: no overlap
    mr = root / rows[3]["mr"]
    img = nib.load(mr)
    aff = img.affine.copy()
    aff[:3, 3] += 2000.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff, img.header), mr)
    # 4: no CT (the reference), but an MR
    rows[4]["ct"] = ""
    spec = StudySpec.from_yaml(root / "spec.yaml")
    d = spec.to_dict()
    for mod in d["modalities"]:
        mod["required"] = False
        if mod["name"] == "mr":
            mod["register"] = "none"
    spec = StudySpec.from_dict(d)
    m = _write(root, "m.csv", rows)
    report = validate_manifest(m, spec, workers=1, progress=False)
    found = {(q.patient_id, q.modality, q.check) for q in report.problems}
    assert (p[0], None, "no_inputs") in found
    assert (p[1], "ct", "not_a_volume") in found
    assert (p[2], "ct", "not_a_volume") in found
    assert (p[3], "mr", "no_overlap") in found
    assert (p[4], "mr", "no_reference") in found
    # with registration allowed, no overlap is a warning that gives the share covered
    d["modalities"] = [dict(mod, register="rigid") if mod["name"] == "mr" else mod for mod in d["modalities"]]
    report = validate_manifest(m, StudySpec.from_dict(d), workers=1, progress=False)
    low = [q for q in report.warnings if q.check == "low_coverage" and q.patient_id == p[3]]
    assert low and "covers 0%" in low[0].message
    # what validation says, the sequence does: the MR of the row without CT is fed as zeros
    man = load_manifest(m, spec, strict=False)
    adm = admit(man, spec, on_missing="zeros", on_corrupt="skip", progress=False)
    v = adm.verdict(p[4])
    assert v.status == "admitted" and v.present["mr"] is False and ("mr", "no_reference: the reference "
                                                                      "modality is absent") in v.zeroed
    assert adm.verdict(p[0]).status == "skipped"


def test_coverage_matches_simpleitk(cohort, tmp_path):
    import SimpleITK as sitk

    from medmulti.manifest import check_row

    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    man = load_manifest(cohort / "manifest.csv", spec)
    row = man.rows[0]
    # a shifted MR covers only part of the CT
    mr = tmp_path / "mr.nii.gz"
    img = nib.load(row.sources["mr"])
    aff = img.affine.copy()
    aff[0, 3] += 60.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff, img.header), mr)
    row.sources["mr"] = mr
    ours = check_row(row, spec).coverage["mr"]
    # the oracle: SimpleITK resamples an all-ones MR onto the CT grid (0 outside the MR)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(row.sources["ct"])))
    ct = reader.Execute()
    ones = sitk.Image(sitk.ReadImage(str(mr)).GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(sitk.ReadImage(str(mr)))
    covered = sitk.GetArrayFromImage(sitk.Resample(ones, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0))
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(float(covered.mean()), abs=0.06)


def test_split_keeps_one_person_under_two_keys_together(cohort, tmp_path):
    """`medmulti split --spec` groups keys by the header identity admission finds (in a fresh process)."""
    import subprocess
    import sys

    m, orig, twin = _same_person_manifest(cohort, "train")
    together = []
    for seed in range(6):
        out = cohort / f"split_{seed}.csv"
        proc = subprocess.run([sys.executable, "-m", "medmulti", "split", str(m), "--out", str(out), "--folds", "3",
                               "--spec", str(cohort / "spec.yaml"), "--seed", str(seed), "--overwrite"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "2 patient key(s) name a person another key names" in proc.stdout
        folds = {r["patient_id"]: r["fold"] for r in _rows_of(out)}
        together.append(folds[orig] == folds[twin])
    assert all(together)
    # the oracle for "it mattered": by key alone, some seed puts the two keys in different folds
    from medmulti.manifest import split_manifest

    apart = [split_manifest(m, cohort / "bykey.csv", folds=3, seed=s, overwrite=True) and
             len({r["fold"] for r in _rows_of(cohort / "bykey.csv") if r["patient_id"] in (orig, twin)}) > 1
             for s in range(6)]
    assert any(apart)


def _rows_of(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))
