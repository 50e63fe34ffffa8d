"""Predictions for patients with no label (issue 16): a manifest without label and split
columns (or with empty label cells) is scored, and one patient is scored straight from
its files (``medmulti predict RUN --source ...``, ``mm.predict_patient``).

The oracles are medmulti's own labeled path: an unlabeled copy of a manifest gives the
probabilities ``predict`` gives on the labeled one, and one patient scored from its files
gives the row ``predict`` writes for a manifest naming the same files. The commands run
as a user runs them, each in its own process in an empty folder; one run is trained
once for the module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medmulti.errors import ManifestError, MissingFileError
from medmulti.examples.cohort import sample_spec
from medmulti.manifest import load_manifest, patient_manifest
from medmulti.spec import ModalitySpec, StudySpec

TINY = ["--epochs", "1", "--width", "2", "--depth", "2", "--batch-size", "4", "--no-progress"]
LABEL_COLUMNS = ("split", "diagnosis")


def medmulti(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed command in a fresh process, as a shell user would."""
    exe = Path(sys.executable).parent / "medmulti"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A CSV as the csv module reads it (comment lines skipped): the oracle for cells."""
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if not ln.startswith("#")]
    reader = csv.DictReader(lines)
    return list(reader.fieldnames or []), list(reader)


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def unlabeled_copy(manifest: Path, out: Path, keep=lambda row: True) -> list[dict[str, str]]:
    """Write ``manifest`` without its split and label columns (the rows ``keep`` accepts)."""
    header, rows = read_csv(manifest)
    rows = [r for r in rows if keep(r)]
    write_csv(out, [h for h in header if h not in LABEL_COLUMNS], rows)
    return rows


def probabilities(path: Path) -> dict[str, tuple[str, ...]]:
    """patient_id -> the p_<class> cells of a predictions CSV, as written."""
    header, rows = read_csv(path)
    columns = [h for h in header if h.startswith("p_")]
    return {r["patient_id"]: tuple(r[c] for c in columns) for r in rows}


def tiny_spec() -> StudySpec:
    """The sample spec on a 16^3 CT grid (12 mm) and 32x32 X-rays: fast, same structure."""
    spec = sample_spec()
    mods = []
    for m in spec.modalities:
        d = m.to_dict()
        if m.name == "ct":
            d.update(shape=[16, 16, 16], spacing_mm=[12.0, 12.0, 12.0])
        if m.name == "xray":
            d.update(shape=[32, 32])
        mods.append(ModalitySpec.from_dict(d))
    return StudySpec(modalities=mods, labels=spec.labels, name="tiny")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """An empty folder: a generated cohort, a run trained and calibrated by the command, each in its process."""
    root = tmp_path_factory.mktemp("predict_unlabeled")
    proc = medmulti("sample-data", "c", "--patients", "12", "--no-faults", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr
    tiny_spec().to_yaml(root / "c" / "tiny.yaml")
    proc = medmulti("train", "c/manifest.csv", "--spec", "c/tiny.yaml", "--out", "run", "--cache", "run/cache",
                    *TINY, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = medmulti("evaluate", "run", "--calibrate", "--bootstrap", "0", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "run" / "calibration.json").is_file()
    proc = medmulti("predict", "run", "c/manifest.csv", "--out", "labeled.csv", "--no-progress", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


# -- the manifest loader (no TensorFlow) ------------------------------------------------------
def test_loader_requires_labels_unless_asked_and_still_checks_what_is_written(tmp_path):
    spec = tiny_spec()
    (tmp_path / "p").mkdir()
    path = tmp_path / "m.csv"
    path.write_text("patient_id,ct,mr,xray\nNEW1,p,p,p\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, spec)
    assert err.value.column == "split" and "medmulti predict" in err.value.cli_text()
    path.write_text("patient_id,split,ct,mr,xray\nNEW1,test,p,p,p\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, spec)
    assert err.value.column == "diagnosis"
    with pytest.raises(ValueError, match="labels must be one of"):
        load_manifest(path, spec, labels="maybe")

    path.write_text("patient_id,ct,mr,xray\nNEW1,p,p,p\nNEW2,p,p,p\n")
    man = load_manifest(path, spec, labels="optional")
    assert [(r.key, r.split, r.labeled) for r in man.rows] == [("NEW1", "", False), ("NEW2", "", False)]

    # with the columns present: empty cells are allowed, written ones are still checked
    path.write_text("patient_id,split,diagnosis,ct,mr,xray\nA,test,,p,p,p\nB,,disease,p,p,p\n")
    man = load_manifest(path, spec, labels="optional")
    assert [(r.split, r.labeled) for r in man.rows] == [("test", False), ("", True)]
    for bad, column in (("A,tset,,p,p,p", "split"), ("A,test,sick,p,p,p", "diagnosis")):
        path.write_text(f"patient_id,split,diagnosis,ct,mr,xray\n{bad}\n")
        with pytest.raises(ManifestError) as err:
            load_manifest(path, spec, labels="optional")
        assert err.value.column == column
    # the default stays strict: an empty label cell is an unknown label
    path.write_text("patient_id,split,diagnosis,ct,mr,xray\nA,test,,p,p,p\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path, spec)
    assert err.value.column == "diagnosis"


def test_patient_manifest_is_one_unlabeled_row_of_the_given_files(tmp_path):
    spec = tiny_spec()
    man = patient_manifest({"ct": "new/ct", "xray": tmp_path / "x.dcm"}, spec, patient_id="NEW 1", root=tmp_path)
    (row,) = man.rows
    assert row.key == "NEW 1" and row.split == "" and not row.labeled
    assert row.paths == {"ct": "new/ct", "mr": None, "xray": str(tmp_path / "x.dcm")}
    assert row.sources["ct"] == tmp_path / "new" / "ct" and row.sources["mr"] is None
    with pytest.raises(ValueError, match="'pet' is not a modality"):
        patient_manifest({"pet": "x"}, spec)
    with pytest.raises(ValueError, match="no source"):
        patient_manifest({"ct": None}, spec)


def test_a_fold_view_keeps_the_rows_without_a_split(tmp_path):
    from medmulti.training.run_folder import CV_SUMMARY, fold_view

    spec = tiny_spec()
    path = tmp_path / "m.csv"
    path.write_text("patient_id,split,ct,mr,xray\nA,train,p,p,p\nB,,p,p,p\nC,test,p,p,p\nD,,p,p,p\n")
    man = load_manifest(path, spec, labels="optional", strict=False)
    (tmp_path / "fold-0").mkdir()
    summary = {"folds": [{"fold": 0}, {"fold": 1}], "assignment": {"A": 0}}
    (tmp_path / CV_SUMMARY).write_text(json.dumps(summary))
    view = fold_view(tmp_path / "fold-0", {"cv": {"fold": 0}}, man)
    assert [(r.key, r.split) for r in view.rows] == [("A", "val"), ("B", ""), ("C", "test"), ("D", "")]


# -- predict on a manifest ------------------------------------------------------------------
def test_an_unlabeled_copy_gives_the_labeled_probabilities(work, tmp_path):
    labeled = probabilities(work / "labeled.csv")
    # the whole cohort, without split and label columns: every row is scored
    rows = unlabeled_copy(work / "c/manifest.csv", work / "c" / "new_all.csv")
    proc = medmulti("predict", "run", "c/new_all.csv", "--out", str(tmp_path / "all.csv"), "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "calibrated with the run's temperature" in proc.stdout
    scored = probabilities(tmp_path / "all.csv")
    assert list(scored) == [r["patient_id"] for r in rows]  # manifest order, every row
    for key, cells in scored.items():  # other batches than per split: equal to the last digit or two
        np.testing.assert_allclose(np.array(cells, float), np.array(labeled[key], float), atol=2e-6)
    # the test rows alone: the same batches as `--split test` on the labeled manifest, so the same cells
    unlabeled_copy(work / "c/manifest.csv", work / "c" / "new_test.csv", keep=lambda r: r["split"] == "test")
    proc = medmulti("predict", "run", "c/new_test.csv", "--out", str(tmp_path / "t.csv"), "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = medmulti("predict", "run", "c/manifest.csv", "--split", "test", "--out", str(tmp_path / "lt.csv"),
                    "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert probabilities(tmp_path / "t.csv") == probabilities(tmp_path / "lt.csv")
    # --split selects rows of a manifest that has splits; rows without one are scored without it
    proc = medmulti("predict", "run", "c/new_test.csv", "--split", "test", "--out", str(tmp_path / "x.csv"),
                    cwd=work)
    assert_clean_failure(proc, 1, "ManifestError", "without --split")


def test_rows_with_an_empty_label_are_scored_and_refused_by_evaluate(work, tmp_path):
    header, rows = read_csv(work / "c/manifest.csv")
    blanked = [r["patient_id"] for r in rows[::2]]
    for r in rows[::2]:
        r["diagnosis"] = ""
    write_csv(work / "c" / "half.csv", header, rows)
    proc = medmulti("predict", "run", "c/half.csv", "--out", str(tmp_path / "half.csv"), "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert probabilities(tmp_path / "half.csv") == probabilities(work / "labeled.csv")  # same splits, same batches
    assert "true" not in read_csv(tmp_path / "half.csv")[0]
    # evaluation needs every label: the first blank row is named, with its column
    proc = medmulti("evaluate", "run", "--manifest", "c/half.csv", "--no-write", "--no-progress", cwd=work)
    assert_clean_failure(proc, 1, "ManifestError", "column 'diagnosis'")
    first_blank = next(i for i, r in enumerate(rows) if r["patient_id"] == blanked[0])
    assert f"row {first_blank + 2}" in proc.stderr  # header line 1, rows from line 2


def test_evaluate_train_and_validate_refuse_an_unlabeled_manifest_naming_the_column(work):
    unlabeled_copy(work / "c/manifest.csv", work / "c" / "nolabels.csv")
    proc = medmulti("evaluate", "run", "--manifest", "c/nolabels.csv", "--no-write", "--no-progress", cwd=work)
    assert_clean_failure(proc, 1, "ManifestError", "column 'split'", "required column is missing",
                         "medmulti predict RUN MANIFEST")
    proc = medmulti("train", "c/nolabels.csv", "--spec", "c/tiny.yaml", "--out", "never", *TINY, cwd=work)
    assert_clean_failure(proc, 1, "ManifestError", "column 'split'", "medmulti predict")
    assert not (work / "never").exists()
    proc = medmulti("validate", "c/nolabels.csv", "--spec", "c/tiny.yaml", "--no-progress", cwd=work)
    assert_clean_failure(proc, 2, "column 'split'")


def test_evaluate_refuses_a_manifest_loaded_without_labels(work):
    from medmulti.training import evaluate

    man = load_manifest(work / "c/manifest.csv", tiny_spec(), labels="optional")
    header, rows = read_csv(work / "c/manifest.csv")
    unlabeled_copy(work / "c/manifest.csv", work / "c" / "nolabels_py.csv")
    unlabeled = load_manifest(work / "c" / "nolabels_py.csv", tiny_spec(), labels="optional")
    assert all(r.labeled for r in man.rows) and not any(r.labeled for r in unlabeled.rows)
    with pytest.raises(ManifestError) as err:
        evaluate(work / "run", unlabeled, write=False, progress=False, bootstrap=0)
    assert err.value.column == "diagnosis" and err.value.patient_id == rows[0]["patient_id"]


# -- one patient from its files -------------------------------------------------------------
def copy_patient(work: Path, pid: str, dest: Path) -> dict[str, str]:
    """The patient's files under neutral names (no key in any path): ``{modality: path}``."""
    dest.mkdir(parents=True, exist_ok=True)
    _, rows = read_csv(work / "c/manifest.csv")
    row = next(r for r in rows if r["patient_id"] == pid)
    out = {}
    for name in ("ct", "mr", "xray"):
        src = work / "c" / row[name]
        target = dest / (name + "".join(src.suffixes))
        (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
        out[name] = str(target)
    return out


def test_predict_patient_equals_the_manifest_row(work, tmp_path):
    from medmulti import predict, predict_patient

    _, rows = read_csv(work / "c/manifest.csv")
    picked = [rows[0]["patient_id"], rows[-1]["patient_id"]]
    files = {pid: copy_patient(work, pid, tmp_path / f"new{i}") for i, pid in enumerate(picked)}
    # the oracle: predict over a manifest naming the same files, one patient per batch
    write_csv(tmp_path / "m.csv", ["patient_id", "ct", "mr", "xray"],
              [{"patient_id": pid, **{n: os.path.relpath(p, tmp_path) for n, p in f.items()}}
               for pid, f in files.items()])
    for calibration in (True, False):
        out = predict(work / "run", tmp_path / "m.csv", out=tmp_path / "p.csv", batch_size=1, progress=False,
                      calibration=calibration)
        oracle = probabilities(out)
        for pid, f in files.items():
            record = predict_patient(work / "run", f, patient_id=pid, calibration=calibration)
            assert tuple(f"{v:.6f}" for v in record["probabilities"].values()) == oracle[pid]
            assert list(record["probabilities"]) == ["healthy", "disease"]
            assert record["calibrated"] is calibration and (record["temperature"] is not None) is calibration
            assert record["predicted"] == max(record["probabilities"], key=record["probabilities"].get)
            assert {n: d["status"] for n, d in record["inputs"].items()} == {"ct": "used", "mr": "used",
                                                                             "xray": "used"}
    # a missing required modality follows the policy: refused under "error", zeros under "zeros"
    f = dict(files[picked[0]])
    del f["mr"]
    with pytest.raises(MissingFileError) as err:
        predict_patient(work / "run", f)
    assert err.value.modality == "mr" and "--source mr=PATH" in err.value.cli_text()
    record = predict_patient(work / "run", f, on_missing="zeros")
    write_csv(tmp_path / "m0.csv", ["patient_id", "ct", "mr", "xray"],
              [{"patient_id": "patient", "ct": os.path.relpath(f["ct"], tmp_path), "mr": "",
                "xray": os.path.relpath(f["xray"], tmp_path)}])
    oracle = probabilities(predict(work / "run", tmp_path / "m0.csv", out=tmp_path / "p0.csv", batch_size=1,
                                   on_missing="zeros", progress=False))
    assert tuple(f"{v:.6f}" for v in record["probabilities"].values()) == oracle["patient"]
    assert record["inputs"]["mr"]["status"] == "zeros" and record["inputs"]["mr"]["source"] is None
    # an unreadable input under "zeros": fed as zeros, the reason said; the MR loses its reference grid too
    broken = dict(files[picked[0]], ct=str(tmp_path / "nowhere"))
    record = predict_patient(work / "run", broken, on_missing="zeros", on_corrupt="zeros")
    assert record["inputs"]["ct"]["status"] == "zeros" and "missing_file" in record["inputs"]["ct"]["reason"]
    assert record["inputs"]["mr"]["status"] == "zeros" and "no_reference" in record["inputs"]["mr"]["reason"]


def header_values(files: dict[str, str]) -> set[str]:
    """Identifying header values of the patient's DICOM files (pydicom as the oracle)."""
    values = set()
    for path in (Path(files["xray"]), *sorted(Path(files["ct"]).iterdir())[:1]):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                        "SeriesInstanceUID", "SOPInstanceUID"):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 4:
                values.add(value)
    return values


def test_the_command_scores_one_patient_from_its_files(work, tmp_path):
    _, rows = read_csv(work / "c/manifest.csv")
    pid = rows[1]["patient_id"]
    files = copy_patient(work, pid, tmp_path / "incoming")
    sources = [a for n in ("ct", "mr", "xray") for a in ("--source", f"{n}={files[n]}")]
    proc = medmulti("predict", "run", *sources, "--json", "patient.json", "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((work / "patient.json").read_text())
    labeled = probabilities(work / "labeled.csv")[pid]  # the same files under their manifest row
    np.testing.assert_allclose(list(record["probabilities"].values()), np.array(labeled, float), atol=2e-6)
    assert record["calibrated"] is True and record["patient_id"] == "patient"
    for c, p in record["probabilities"].items():
        assert f"{c}  " in proc.stdout and f"{p:.6f}" in proc.stdout
    assert "calibrated with the run's temperature" in proc.stdout
    # no header value anywhere in what the command prints or writes
    secrets = header_values(files)
    assert secrets
    for text in (proc.stdout, proc.stderr, (work / "patient.json").read_text()):
        for value in secrets:
            assert value not in text
    # a required modality left out: a typed error in CLI terms
    proc = medmulti("predict", "run", "--source", f"ct={files['ct']}", "--source", f"xray={files['xray']}",
                    "--no-progress", cwd=work)
    assert_clean_failure(proc, 1, "MissingFileError", "modality 'mr'", "--source mr=PATH", "--on-missing zeros")


@pytest.mark.parametrize("args, needle", [
    ((), "give MANIFEST, or --source"),
    (("c/manifest.csv", "--source", "ct=x"), "not both"),
    (("--source", "ct=x", "--out", "p.csv"), "--out applies to a MANIFEST"),
    (("--source", "ct=x", "--source", "ct=y"), "given twice"),
    (("--source", "pet=x"), "not a modality of the run's spec"),
    (("c/manifest.csv", "--json", "p.json"), "--json applies to --source"),
    (("--source", "ct"), "expected NAME=PATH"),
])
def test_usage_errors_exit_2(work, args, needle):
    proc = medmulti("predict", "run", *args, cwd=work)
    assert_clean_failure(proc, 2, needle)


def test_a_folder_of_several_series_is_narrowed_by_the_spec_rules(work, tmp_path):
    """A patient's export in one folder (CT, a scout written beside it, the radiograph): the spec's
    rules take the CT and the radiograph, so the probabilities are those of the manifest row."""
    from medmulti import predict_patient

    _, rows = read_csv(work / "c/manifest.csv")
    pid = rows[2]["patient_id"]
    files = copy_patient(work, pid, tmp_path / "export" / "study")
    ct_files = sorted(Path(files["ct"]).iterdir())
    scout = tmp_path / "export" / "study" / "scout"
    scout.mkdir()
    scout_uid = pydicom.uid.generate_uid()
    for i, src in enumerate(ct_files[:2]):  # two slices of the CT as a localizer series of its own
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = scout_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesNumber, ds.ImageType = 99, ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesDescription = "Topogram of Mrs Whitfield-Hargreaves"
        ds.save_as(scout / f"s{i}")
    folder = tmp_path / "export"
    record = predict_patient(work / "run", {"ct": folder, "mr": files["mr"], "xray": folder})
    labeled = probabilities(work / "labeled.csv")[pid]  # the same CT and radiograph under their manifest row
    np.testing.assert_allclose(list(record["probabilities"].values()), np.array(labeled, float), atol=2e-6)
    ct = record["inputs"]["ct"]
    first = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    assert ct["source"] == str(folder) and ct["status"] == "used"
    assert ct["selection"]["chosen"] == f"series {first.SeriesNumber}" and ct["selection"]["images"] == len(ct_files)
    assert ct["selection"]["series_in_folder"] == 3 and ct["selection"]["path"] == "study/ct"
    assert [(s["series"], s["reason"]) for s in ct["selection"]["left_out"]] == [
        ("series 99", "ImageType holds LOCALIZER")]
    xray = record["inputs"]["xray"]["selection"]
    assert xray["path"] == "study/xray.dcm" and xray["left_out"] == []
    assert record["inputs"]["mr"]["selection"] is None  # a file: read as given
    text = json.dumps(record)
    assert "Whitfield" not in text and not [v for v in header_values(files) if v in text]
    # a folder of one series is read as given, as before
    record = predict_patient(work / "run", {"ct": files["ct"], "mr": files["mr"], "xray": files["xray"]})
    assert record["inputs"]["ct"]["selection"] is None
    np.testing.assert_allclose(list(record["probabilities"].values()), np.array(labeled, float), atol=2e-6)
    # no series of a folder passes the CT rules (a scout and a radiograph): the CT counts as not given,
    # and as it is required the patient is refused, saying why
    lonely = tmp_path / "lonely"
    shutil.copytree(scout, lonely / "scout")
    shutil.copy(files["xray"], lonely / "xray.dcm")
    with pytest.raises(MissingFileError) as err:
        predict_patient(work / "run", {"ct": lonely, "mr": files["mr"], "xray": files["xray"]})
    assert (err.value.check, err.value.modality) == ("missing_modality", "ct")
    assert "passes the spec's select rules" in str(err.value) and "Whitfield" not in str(err.value)
    record = predict_patient(work / "run", {"ct": lonely, "mr": files["mr"], "xray": files["xray"]},
                             on_missing="zeros")
    assert record["inputs"]["ct"]["status"] == "zeros" and record["inputs"]["ct"]["source"] == str(lonely)
    assert record["inputs"]["ct"]["selection"]["chosen"] is None
