"""``scan`` on pydicom's real ``dicomdirtests`` export, as shipped and without its DICOMDIR files.

pydicom is the oracle: what it reads from the same files decides which patients,
series and views exist; the scan's choices are compared with that, and its outputs
are searched for every identifying value pydicom reads from the headers.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pydicom
import pytest
from scan_helpers import SPEC_YAML

from medmulti.manifest import validate_manifest
from medmulti.scanning import pseudonym, scan

SECRET = b"0123456789abcdef0123456789abcdef"


def pydicom_files(root: Path) -> dict[Path, pydicom.Dataset]:
    """Every file of the tree pydicom reads (DICOMDIRs included), by path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            try:
                out[p] = pydicom.dcmread(p)
            except Exception:
                continue
    return out


def images(files: dict[Path, pydicom.Dataset]) -> dict[Path, pydicom.Dataset]:
    return {p: ds for p, ds in files.items() if "PixelData" in ds}


def manifest_rows(path: Path) -> list[dict[str, str]]:
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def oracle(dicomdirtests):
    return pydicom_files(dicomdirtests)


@pytest.fixture(scope="module")
def scanned(dicomdirtests, tmp_path_factory, oracle):
    out = tmp_path_factory.mktemp("out")
    spec = out / "spec.yaml"
    spec.write_text(SPEC_YAML)
    secret = tmp_path_factory.mktemp("key") / "secret"
    secret.write_bytes(SECRET)
    result = scan(dicomdirtests, spec, out=out / "manifest.csv", secret=secret, workers=1, progress=False)
    return result, out


def key_of(patient_id: str) -> str:
    return pseudonym(patient_id, SECRET)


def test_the_patients_with_images_are_the_rows(scanned, oracle):
    result, out = scanned
    with_pixels = {str(ds.PatientID) for ds in images(oracle).values()}
    every = {str(ds.PatientID) for ds in oracle.values() if "PatientID" in ds and "DirectoryRecordSequence" not in ds}
    assert {r["patient_id"] for r in manifest_rows(out / "manifest.csv")} == {key_of(p) for p in with_pixels}
    assert {p.key for p in result.patients} == {key_of(p) for p in every}  # the tiny file-set: seen, not written
    left_out = {p.key for p in result.patients if p.row is None}
    assert left_out == {key_of(p) for p in every - with_pixels}


def test_the_axial_ct_is_chosen_and_the_scout_is_not(scanned, oracle):
    result, out = scanned
    rows = {r["patient_id"]: r for r in manifest_rows(out / "manifest.csv")}
    for pid in {str(ds.PatientID) for ds in images(oracle).values()}:
        ct = {p: ds for p, ds in images(oracle).items() if ds.PatientID == pid and ds.Modality == "CT"}
        axial = {str(ds.SeriesInstanceUID) for ds in ct.values() if "LOCALIZER" not in list(ds.ImageType)}
        scouts = {str(ds.SeriesInstanceUID) for ds in ct.values() if "LOCALIZER" in list(ds.ImageType)}
        row = rows[key_of(pid)]
        assert row["ct_series"] in axial and row["ct_series"] not in scouts
        folder = {p.parent for p, ds in ct.items() if str(ds.SeriesInstanceUID) == row["ct_series"]}
        assert {(out / row["ct"]).resolve()} == {f.resolve() for f in folder}
    patient = next(p for p in result.patients if p.key == key_of("98890234"))
    reasons = {v.reason for v in patient.choices["ct"].verdicts if not v.chosen}
    assert "ImageType holds LOCALIZER" in reasons


def test_the_patient_without_a_usable_mr_is_reported(scanned, oracle):
    result, out = scanned
    patient = next(p for p in result.patients if p.key == key_of("98890234"))
    choice = patient.choices["mr"]
    assert choice.missing
    mr = [ds for ds in images(oracle).values() if ds.PatientID == "98890234" and ds.Modality == "MR"]
    derived = {str(ds.SeriesInstanceUID) for ds in mr if ds.ImageType[0] == "DERIVED"}
    seen = {v.candidate.series.first.series_uid: v.reason for v in choice.verdicts}
    assert seen.keys() == {str(ds.SeriesInstanceUID) for ds in mr}  # every MR series judged
    assert all(seen[uid] == "ImageType holds DERIVED" for uid in derived) and derived
    assert all("localizer" in why or "pilot" in why for uid, why in seen.items() if uid not in derived)
    assert any(line.startswith(f"{key_of('98890234')}  mr  missing") for line in result.lines())
    assert not result.ok  # a gap the user must know about


def test_the_xray_is_an_ap_view_and_the_tie_is_ambiguous(scanned, oracle):
    result, out = scanned
    row = next(r for r in manifest_rows(out / "manifest.csv") if r["patient_id"] == key_of("77654033"))
    chosen = pydicom.dcmread(out / row["xray"], stop_before_pixels=True)
    assert chosen.Modality == "CR" and chosen.ViewPosition == "AP" and row["xray_series"] == ""
    ap = [ds for ds in images(oracle).values() if ds.get("ViewPosition") == "AP"]
    patient = next(p for p in result.patients if p.key == key_of("77654033"))
    assert patient.choices["xray"].ambiguous == (len(ap) > 1)


def test_validate_runs_on_the_manifest_and_flags_the_gapped_ct(scanned, dicomdirtests, oracle):
    result, out = scanned
    report = validate_manifest(out / "manifest.csv", out / "spec.yaml", data_root=dicomdirtests, workers=1,
                               progress=False)
    geometry = {(p.patient_id, p.modality) for p in report.problems if p.check == "series_geometry"}
    assert geometry == {(key_of("77654033"), "ct")}
    assert not [p for p in report.problems if p.check in ("missing_file", "unsafe_path", "corrupt_file",
                                                          "unsupported_data", "modality_mismatch")]
    chosen = next(p for p in result.patients if p.key == key_of("77654033")).choices["ct"].chosen
    assert chosen.series.geometry == "problem"  # the scan saw the gap too, and said so


PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate",
                "InstitutionName", "ReferringPhysicianName", "OtherPatientIDs")
#: Free text that may hold PHI in real exports: never quoted (long ones searched; a short one such as
#: "Scout" is also a word of the default rules' patterns).
TEXT_KEYWORDS = ("SeriesDescription", "StudyDescription", "ProtocolName")


def phi_values(oracle) -> set[str]:
    values = set()
    for ds in oracle.values():
        for kw in PHI_KEYWORDS:
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 4:
                values.add(v)
        for kw in TEXT_KEYWORDS:
            v = str(ds.get(kw, "") or "").strip()
            if len(v) >= 9:
                values.add(v)
        name = str(ds.get("PatientName", "") or "")
        values |= {part for part in name.replace("^", " ").split() if len(part) >= 4}
    return values


def test_no_phi_in_the_report(scanned, oracle):
    result, out = scanned
    values = phi_values(oracle)
    assert "77654033" in values and "Archibald" in values  # the search is not vacuous
    for name in ("manifest.scan.txt", "manifest.scan.json", "manifest.scan.html"):
        text = (out / name).read_text().lower()
        assert [v for v in values if v.lower() in text] == [], name
    assert [v for v in values if v.lower() in result.summary().lower()] == []


def test_no_phi_in_the_manifest_but_the_export_s_own_folder_names(scanned, oracle):
    result, out = scanned
    values = phi_values(oracle)
    rows = manifest_rows(out / "manifest.csv")
    paths = {"ct", "mr", "xray"}
    for row in rows:
        for column, cell in row.items():
            found = [v for v in values if v.lower() in cell.lower()]
            if column in paths:
                continue  # checked below: only a folder the export itself named after the patient
            assert found == [], column
    leaking = {r["patient_id"] for r in rows if any("77654033" in r[c] for c in paths)}
    assert leaking == {key_of("77654033")}  # dicomdirtests/77654033/... is the export's own folder name
    flagged = {p.key for p in result.rows if p.identity_in_paths}
    assert flagged == leaking
    assert any("hold the patient's PatientID or name" in w for w in result.warnings())


def test_without_dicomdir_the_choices_are_the_same(scanned, dicomdirtests, tmp_path, spec_file, secret):
    result, out = scanned
    copy = tmp_path / "export"
    shutil.copytree(dicomdirtests, copy, ignore=shutil.ignore_patterns("DICOMDIR*"))
    again = scan(copy, spec_file, secret=secret, workers=1, progress=False)
    assert not again.dicomdirs
    before = {(p.patient.patient_id, n): src for p in result.rows for n, src in p.sources.items()}
    after = {(p.patient.patient_id, n): src for p in again.rows for n, src in p.sources.items()}
    assert before == after


def test_the_dicomdir_is_used_when_present(scanned, dicomdirtests, tmp_path, spec_file, secret):
    result, out = scanned
    files = pydicom_files(dicomdirtests)
    refs = {p: len([r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r])
            for p, ds in files.items() if p.name == "DICOMDIR"}
    assert {(Path(d["path"]).parent, d["referenced"], len(d["missing"])) for d in result.dicomdirs} == \
        {(p.parent.relative_to(dicomdirtests), n, 0) for p, n in refs.items()}
    copy = tmp_path / "export"
    shutil.copytree(dicomdirtests, copy)
    (copy / "77654033" / "CR1" / "6154").unlink()
    again = scan(copy, spec_file, secret=secret, workers=1, progress=False)
    top = next(d for d in again.dicomdirs if d["path"] == "DICOMDIR")
    assert top["missing"] == ["77654033/CR1/6154"]
    assert any("references are missing" in w for w in again.warnings())
