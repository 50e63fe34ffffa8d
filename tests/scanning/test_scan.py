"""``scan`` on a generated export: the planted series are chosen, rules and preferences as the spec says.

The export (``scan_helpers.write_export``) holds per patient an older study, decoy
series (a thicker reconstruction, a localizer in two orientations, a derived reformat,
a 2D MR with more images, an MR localizer, a lateral radiograph), files without
extensions in random folders. The planted series are known by the UIDs written.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scan_helpers import SPEC_YAML

from medmulti.errors import SpecError, UnsafePathError
from medmulti.scanning import parse_split, pseudonym, scan
from medmulti.scanning.keys import load_secret
from medmulti.spec import ModalitySpec, StudySpec


def rows_of(path: Path) -> list[dict[str, str]]:
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


def by_patient(result) -> dict[str, object]:
    return {p.patient.patient_id: p for p in result.patients}


def test_the_planted_series_are_chosen(export, spec_file, secret):
    root, planted = export
    result = scan(root, spec_file, secret=secret, workers=1, progress=False)
    got = by_patient(result)
    assert set(got) == {p.identity["PatientID"] for p in planted}
    for p in planted:
        r = got[p.identity["PatientID"]]
        assert r.sources["ct"][1] == p.ct and r.sources["mr"][1] == p.mr
        assert (root / r.sources["xray"][0]) == p.xray and r.sources["xray"][1] == ""
        ct = r.choices["ct"]
        assert "the most recent" in ct.study_note and not ct.ambiguous
        why = {v.candidate.series.first.series_uid: v.reason for v in ct.verdicts if not v.chosen}
        assert why[p.decoys["scout"]] == "ImageType holds LOCALIZER"
        assert why[p.decoys["mpr"]] == "ImageType holds DERIVED"
        assert why[p.decoys["thick"]].startswith("lost on most_images")
        assert why[p.older_ct].startswith("in study 1")
        mr_why = {v.candidate.series.first.series_uid: v.reason for v in r.choices["mr"].verdicts if not v.chosen}
        assert mr_why[p.decoys["t2"]] == "lost on 3d: 2D vs 3D"
        assert "localizer" in mr_why[p.decoys["mr_loc"]]
    assert result.ok


def test_the_manifest_validates_and_names_the_planted_files(export, spec_file, secret, tmp_path):
    root, planted = export
    out = root.parent / "scan_out"
    out.mkdir(exist_ok=True)
    labels = tmp_path / "labels.csv"
    labels.write_text("PatientID,diagnosis\n" + "".join(f"{p.identity['PatientID']},{c}\n"
                                                       for p, c in zip(planted, ["healthy", "disease"])))
    result = scan(root, spec_file, out=out / "m.csv", secret=secret, labels=labels, split="train=0.5,val=0.5",
                  workers=1, progress=False, overwrite=True)
    rows = rows_of(out / "m.csv")
    assert {r["split"] for r in rows} == {"train", "val"} and {r["diagnosis"] for r in rows} == {"healthy", "disease"}
    for p in planted:
        row = next(r for r in rows if r["patient_id"] == pseudonym(p.identity["PatientID"], secret.read_bytes().strip()))
        files = [f for f in (out / row["ct"]).iterdir()]
        assert {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files} >= {p.ct}
        assert row["ct_series"] == p.ct and row["mr_series"] == p.mr
        assert (out / row["xray"]).resolve() == p.xray.resolve()
    from medmulti.manifest import validate_manifest

    assert any("--data-root" in w for w in result.warnings())  # the manifest lies beside the export
    report = validate_manifest(out / "m.csv", spec_file, data_root=root, workers=1, progress=False)
    assert [p for p in report.problems if p.severity == "error"] == []
    assert result.ok


def test_select_rules_in_the_spec_change_the_choice(export, secret):
    root, planted = export
    spec = StudySpec.from_dict({
        "labels": {"column": "dx", "classes": ["a", "b"]},
        "modalities": [
            {"name": "ct", "kind": "ct", "select": {"prefer": ["fewest_images"]}},
            {"name": "mr", "kind": "mr", "select": {"include": ["t2"]}},
            {"name": "xray", "kind": "xray", "shape": [32, 32], "select": {"prefer": ["view:LL"]}},
        ]})
    result = scan(root, spec, secret=secret, workers=1, progress=False)
    got = by_patient(result)
    for p in planted:
        r = got[p.identity["PatientID"]]
        assert r.sources["ct"][1] == p.decoys["thick"]
        assert r.sources["mr"][1] == p.decoys["t2"]
        chosen = pydicom.dcmread(root / r.sources["xray"][0], stop_before_pixels=True)
        assert chosen.ViewPosition == "LL"
    strict = StudySpec.from_dict({"labels": {"column": "dx", "classes": ["a", "b"]},
                                  "modalities": [{"name": "ct", "kind": "ct", "select": {"min_images": 13}}]})
    missing = scan(root, strict, secret=secret, workers=1, progress=False)
    assert all(p.row is None for p in missing.patients)
    assert all("fewer than min_images 13" in v.reason for p in missing.patients for v in p.choices["ct"].verdicts
               if v.candidate.series.first.series_uid not in {x.decoys["scout"] for x in planted}
               and "DERIVED" not in v.reason)


def test_the_closest_study_to_a_date_wins_and_accession_joins(export, spec_file, secret, tmp_path):
    root, planted = export
    labels = tmp_path / "labels.csv"
    # the older study's accession number joins; its date makes the older CT the closest
    labels.write_text("AccessionNumber,diagnosis,when,x_site\n" + "".join(
        f"ACC{770100 + i},healthy,2019-01-05,north\n" for i in range(len(planted))))
    result = scan(root, spec_file, secret=secret, labels=labels, label_key="accession", date_column="when",
                  workers=1, progress=False)
    got = by_patient(result)
    for p in planted:
        r = got[p.identity["PatientID"]]
        assert r.labelled and r.row["diagnosis"] == "healthy" and r.row["x_site"] == "north"
        assert r.sources["ct"][1] == p.older_ct
        assert "closest to the patient's date" in r.choices["ct"].study_note
    text = result.manifest_text(tmp_path / "m.csv")
    assert text.splitlines()[1].endswith(",x_site")


def test_pseudonyms_are_stable_per_secret_and_patient_id_keys_warn(export, spec_file, secret, tmp_path, caplog):
    root, planted = export
    first = scan(root, spec_file, secret=secret, workers=1, progress=False)
    again = scan(root, spec_file, secret=secret, workers=1, progress=False)
    assert [p.key for p in first.patients] == [p.key for p in again.patients]
    other = tmp_path / "other-secret"
    other.write_text("fedcba9876543210fedcba9876543210")
    moved = scan(root, spec_file, secret=other, workers=1, progress=False)
    assert not {p.key for p in moved.patients} & {p.key for p in first.patients}
    ids = {p.identity["PatientID"] for p in planted}
    assert {p.key for p in first.patients} == {pseudonym(i, secret.read_bytes().strip()) for i in ids}
    assert not any(i in p.key for i in ids for p in first.patients)
    with caplog.at_level("WARNING", logger="medmulti.scanning"):
        plain = scan(root, spec_file, key="patient-id", workers=1, progress=False)
    assert {p.key for p in plain.patients} == ids
    assert "PatientIDs" in caplog.text and any("PatientIDs" in w for w in plain.warnings())


def test_the_default_secret_is_created_private_and_kept_out_of_the_outputs(export, spec_file, tmp_path):
    root, _ = export
    config = Path(os.environ["XDG_CONFIG_HOME"])
    scan(root, spec_file, workers=1, progress=False)
    made = config / "medmulti" / "scan-secret"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    assert len(load_secret(made)) >= 32
    with pytest.raises(UnsafePathError, match="secret"):
        scan(root, spec_file, secret=config / "medmulti" / "scan-secret", out=config / "m.csv", workers=1,
             progress=False)
    inside = tmp_path / "s"
    inside.write_text("x" * 40)
    with pytest.raises(UnsafePathError):
        scan(tmp_path, spec_file, secret=inside, workers=1, progress=False)


def test_no_phi_reaches_the_report_or_the_summary(export, spec_file, secret, tmp_path):
    root, planted = export
    out = tmp_path / "out"
    out.mkdir()
    result = scan(root, spec_file, out=out / "m.csv", secret=secret, workers=1, progress=False)
    values = set()
    for f in root.rglob("*"):
        if f.is_file():
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            for kw in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyDate",
                       "SeriesDescription"):
                v = str(ds.get(kw, "") or "")
                if len(v) >= (9 if kw == "SeriesDescription" else 4):  # "SCOUT" is also a rule's word
                    values.add(v)
    values |= {"Gwendolyn0", "Testperson"}
    texts = [(out / n).read_text() for n in ("m.csv", "m.scan.txt", "m.scan.json", "m.scan.html")]
    texts.append(result.summary() + "\n".join(result.lines()))
    for text in texts:
        assert [v for v in values if v.lower() in text.lower()] == []


def test_workers_give_the_same_result(export, spec_file, secret):
    root, _ = export
    one = scan(root, spec_file, secret=secret, workers=1, progress=False)
    two = scan(root, spec_file, secret=secret, workers=2, progress=False)
    assert [(p.key, p.sources) for p in one.patients] == [(p.key, p.sources) for p in two.patients]
    assert one.to_dict()["patients"] == two.to_dict()["patients"]


def test_nifti_files_are_keyed_by_their_path(export, spec_file, secret, tmp_path):
    root, planted = export
    copy = tmp_path / "export"
    shutil.copytree(root, copy)
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    pid = planted[0].identity["PatientID"]
    bids = copy / f"sub-{pid}" / "anat" / f"sub-{pid}_T1w.nii.gz"
    bids.parent.mkdir(parents=True)
    nib.save(img, bids)
    (copy / "nifti" / "ONLYNIFTI").mkdir(parents=True)
    nib.save(img, copy / "nifti" / "ONLYNIFTI" / "t1.nii")
    (copy / "nifti" / "fake").mkdir()
    (copy / "nifti" / "fake" / "t1.nii").write_bytes(b"not a nifti file at all" * 30)
    result = scan(copy, spec_file, secret=secret, nifti={"mr": ["**/*_T1w.nii.gz", "nifti/{key}/t1.nii"]},
                  workers=1, progress=False)
    got = by_patient(result)
    assert got[pid].sources["mr"] == (f"sub-{pid}/anat/sub-{pid}_T1w.nii.gz", "", "")
    assert got["ONLYNIFTI"].sources == {"mr": ("nifti/ONLYNIFTI/t1.nii", "", "")}
    assert "fake" not in got  # matched by name, not NIfTI by content
    other = planted[1].identity["PatientID"]
    assert got[other].sources["mr"][1] == planted[1].mr  # no NIfTI: the DICOM series
    with pytest.raises(SpecError):
        scan(copy, spec_file, secret=secret, nifti={"mr": "../outside/*.nii"}, workers=1, progress=False)


def test_hostile_entries_are_passed_over_without_blocking(export, spec_file, secret, tmp_path):
    root, _ = export
    copy = tmp_path / "export"
    shutil.copytree(root, copy)
    outside = tmp_path / "outside.dcm"
    shutil.copyfile(next(f for f in copy.rglob("*") if f.is_file()), outside)
    (copy / "link_out").symlink_to(outside)
    (copy / "dangling").symlink_to(copy / "nothing_here")
    (copy / "loop").symlink_to(copy / "loop")
    (copy / "dir_link").symlink_to(copy / next(iter(os.listdir(root))), target_is_directory=True)
    os.mkfifo(copy / "pipe")
    (copy / "bad\u202ename").write_bytes(b"\x00" * 200)
    (copy / os.fsdecode(b"latin\xe9")).write_bytes(b"x")
    result = scan(copy, spec_file, secret=secret, workers=1, progress=False)
    why = dict(result.walk_passed_over)
    assert "outside" in why["link_out"] and why["loop"] == "a symlink loop"
    assert "nothing" in why["dangling"] and "not descended" in why["dir_link"]
    assert "FIFO" in why["pipe"] and "UTF-8" in why[os.fsdecode(b"latin\xe9")]
    assert len(result.rows) == 2
    (copy / "sub\u202efolder").mkdir()
    (copy / "sub\u202efolder" / "dangling").symlink_to(copy / "nothing_here")
    text = scan(copy, spec_file, secret=secret, workers=1, progress=False).to_text()
    assert "\u202e" not in text and "sub\\u202efolder/dangling" in text  # shown, escaped


def test_parse_split():
    assert parse_split("train=0.7,val=0.15,test=0.15") == (0.7, 0.15, 0.15)
    for bad in ("train=0.7,val=0.2", "train=0.5,bogus=0.5", "train=x,val=1", "train=0.5,train=0.5"):
        with pytest.raises(ValueError):
            parse_split(bad)


def test_the_select_block_round_trips_and_is_checked(tmp_path):
    spec = StudySpec.from_dict({
        "labels": {"column": "dx", "classes": ["a", "b"]},
        "modalities": [{"name": "ct", "kind": "ct", "select": {"exclude": "scout", "prefer": ["Thinnest", "axial"],
                                                               "min_images": "20"}},
                       {"name": "mr", "kind": "mr", "select": {"nifti": ["sub-{key}/anat/*_T1w.nii.gz"]}},
                       {"name": "xray", "kind": "xray", "shape": [8, 8]}]})
    spec.to_yaml(tmp_path / "s.yaml")
    back = StudySpec.from_yaml(tmp_path / "s.yaml")
    assert back == spec
    assert back.modality("ct").selection.prefer == ("thinnest", "axial")
    assert back.modality("ct").selection.min_images == 20 and back.modality("ct").selection.exclude == ("scout",)
    assert "select" not in back.modality("xray").to_dict()  # defaults are not written
    for select, key in [({"bogus": 1}, "bogus"), ({"modalities": ["MR"]}, "modalities"),
                        ({"prefer": ["most_pixels"]}, "prefer"), ({"min_images": 0}, "min_images"),
                        ({"nifti": "/abs/*.nii"}, "nifti"), ({"exclude_image_type": ["a b!"]}, "exclude_image_type")]:
        with pytest.raises(SpecError) as err:
            ModalitySpec(name="ct", kind="ct", select=select)
        assert err.value.keyword == key


def test_the_command_in_a_subprocess(export, tmp_path, secret):
    root, _ = export
    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.yaml").write_text(SPEC_YAML)
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    command = [sys.executable, "-m", "medmulti", "scan", str(root), "--spec", "spec.yaml", "--out", "manifest.csv",
               "--split", "train=0.5,val=0.5", "--no-progress", "--workers", "1"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "manifest: 2 row(s)" in done.stdout and "--data-root" in done.stdout
    assert (tmp_path / "cfg" / "medmulti" / "scan-secret").is_file()
    for name in ("manifest.csv", "manifest.scan.txt", "manifest.scan.json", "manifest.scan.html"):
        assert (work / name).is_file()
    assert subprocess.run(command, cwd=work, env=env, capture_output=True, timeout=300).returncode == 2  # exists
    bad = subprocess.run(command[:-4] + ["--split", "train=2"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "split" in bad.stderr
    check = subprocess.run([sys.executable, "-m", "medmulti", "validate", "manifest.csv", "--spec", "spec.yaml",
                            "--data-root", str(root), "--no-progress", "--workers", "1"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300)
    assert "unknown_label" in check.stdout and "series_geometry" not in check.stdout  # no labels given: say so


def test_mm_scan_is_the_function():
    import medmulti as mm
    import medmulti.scanning

    assert mm.scan is medmulti.scanning.scan and callable(mm.scan)
    assert mm.ScanResult is medmulti.scanning.ScanResult


def test_a_stray_copy_of_a_slice_elsewhere_does_not_move_the_series(export, spec_file, secret, tmp_path):
    root, planted = export
    copy = tmp_path / "export"
    shutil.copytree(root, copy)
    p = planted[0]
    ct_files = [f for f in copy.rglob("*") if f.is_file()
                and str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) == p.ct]
    (copy / "stray").mkdir()
    shutil.copyfile(ct_files[0], copy / "stray" / "copy")
    result = scan(copy, spec_file, secret=secret, workers=1, progress=False)
    r = by_patient(result)[p.identity["PatientID"]]
    series = r.choices["ct"].chosen.series
    assert series.duplicates == ["stray/copy"] and series.geometry == "ok"
    assert (copy / r.sources["ct"][0]) == ct_files[0].parent


def test_a_multi_echo_series_gets_a_volume(tmp_path, spec_file, secret):
    from medmulti.examples.synth import affine_from_geometry, new_uid, write_dicom_series

    uid, study = new_uid(), new_uid()
    who = {"PatientID": "ECHO0001"}
    rng = np.random.default_rng(0)
    for echo in (1, 2):
        write_dicom_series(rng.integers(0, 100, (6, 8, 8)).astype(np.int16), tmp_path / "data" / "mr",
                           modality="MR", rescale_intercept=0.0, series_uid=uid, study_uid=study, patient=who,
                           affine=affine_from_geometry((2.0, 1.0, 1.0)), filename=f"E{echo}_{{index}}",
                           extra={"EchoNumbers": echo, "ImageType": ["ORIGINAL", "PRIMARY"]})
    result = scan(tmp_path / "data", spec_file, secret=secret, workers=1, progress=False)
    (r,) = result.patients
    assert r.sources["mr"] == ("mr", uid, "0")
    assert r.choices["mr"].chosen.series.volume_key == "EchoNumbers"
    assert "volume 0 is written in mr_volume" in r.choices["mr"].reason
    assert "mr_volume" in result.manifest_text(tmp_path / "m.csv").splitlines()[1]
