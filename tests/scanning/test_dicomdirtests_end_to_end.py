"""pydicom's ``dicomdirtests`` tree, all of it as shipped, as a hospital export taken from
``medmulti scan`` to predictions, as a user types the commands (issue 16).

Each command runs in its own process, in a folder that holds only the export, a tiny
spec and a labels file: ``scan`` (labels joined, split filled) -> ``validate`` ->
``preprocess`` -> a one-epoch ``train`` -> ``scan`` again without labels (new
patients) -> ``predict`` on that unlabelled manifest, and ``predict --source`` on one
patient's folders, whose series the spec's rules choose.

pydicom is the oracle: which patients have images, which CT series is the axial one
and which the scout, which CT has a gap in its slice positions, which series of a
folder are MR; medmulti's outputs are compared with what pydicom reads from the same
files, and searched for every identifying value pydicom reads.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmulti.scanning import load_secret, pseudonym

SPEC_YAML = """\
format: 1
name: dicomdirtests
labels: {column: diagnosis, classes: [healthy, disease]}
modalities:
  - {name: ct, kind: ct, reference: true, spacing_mm: [8, 8, 8], shape: [8, 8, 8]}
  - {name: mr, kind: mr, required: false}
  - {name: xray, kind: xray, shape: [16, 16], required: false}
"""
TINY = ["--epochs", "1", "--width", "2", "--depth", "2", "--batch-size", "2", "--no-progress"]


def medmulti(*args: str, cwd: Path, config: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed command in a fresh process, as a shell user would (their own config folder)."""
    exe = Path(sys.executable).parent / "medmulti"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["XDG_CONFIG_HOME"] = str(config)
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def csv_rows(path: Path) -> list[dict[str, str]]:
    text = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


# -- the oracle: what pydicom reads from the tree ----------------------------------------------


def pydicom_images(root: Path) -> dict[Path, pydicom.Dataset]:
    """Every file of the tree pydicom reads that holds pixels, by path."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p)
        except Exception:
            continue
        if "PixelData" in ds:
            out[p] = ds
    return out


def has_gap(datasets: list[pydicom.Dataset]) -> bool:
    """Slice positions along the normal with a step more than 1.5 times the smallest one."""
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    z = np.sort([float(np.dot(normal, np.array(ds.ImagePositionPatient, float))) for ds in datasets])
    steps = np.diff(z)
    return len(steps) > 1 and steps.max() > 1.5 * steps.min()


PHI_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate", "InstitutionName",
                "ReferringPhysicianName", "SeriesInstanceUID", "StudyInstanceUID")
TEXT_KEYWORDS = ("SeriesDescription", "StudyDescription", "ProtocolName")


def phi_values(images: dict[Path, pydicom.Dataset]) -> set[str]:
    """Identifying values and long free texts of the headers (a short one such as "Scout" is also a rule word)."""
    values = set()
    for ds in images.values():
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


def leaked(text: str, values: set[str]) -> list[str]:
    low = text.lower()
    return sorted(v for v in values if v.lower() in low)


# -- the user's session -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """An empty folder with the export, the spec and the labels; the commands run one by one."""
    shipped = Path(os.path.dirname(get_testdata_file("DICOMDIR")))
    work = tmp_path_factory.mktemp("dicomdirtests_session")
    config = tmp_path_factory.mktemp("config")
    shutil.copytree(shipped, work / "export")
    images = pydicom_images(work / "export")
    (work / "spec.yaml").write_text(SPEC_YAML)
    patients = sorted({str(ds.PatientID) for ds in images.values()})
    labels = {pid: ("healthy", "disease")[i % 2] for i, pid in enumerate(patients)}
    (work / "labels.csv").write_text("PatientID,diagnosis\n" + "".join(f"{p},{d}\n" for p, d in labels.items()))
    steps = {}

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        steps[name] = proc = medmulti(*args, cwd=work, config=config)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        return proc

    run("scan", "scan", "export", "--spec", "spec.yaml", "--out", "manifest.csv", "--labels", "labels.csv",
        "--split", "train=0.5,val=0.5", "--seed", "0", "--no-progress")
    run("validate", "validate", "manifest.csv", "--spec", "spec.yaml", "--json", "problems.json", "--no-progress")
    run("preprocess", "preprocess", "manifest.csv", "--spec", "spec.yaml", "--cache", "cache", "--json",
        "preprocess.json", "--no-progress")
    run("train", "train", "manifest.csv", "--spec", "spec.yaml", "--out", "run", "--cache", "cache",
        "--on-corrupt", "zeros", *TINY)
    run("scan_new", "scan", "export", "--spec", "spec.yaml", "--out", "new_patients.csv", "--no-progress")
    run("predict", "predict", "run", "new_patients.csv", "--out", "predictions.csv", "--no-progress")
    secret = load_secret(Path(config) / "medmulti" / "scan-secret", create=False)
    return {"work": work, "images": images, "labels": labels, "steps": steps, "secret": secret, "config": config}


def key(session, patient_id: str) -> str:
    return pseudonym(patient_id, session["secret"])


def ct_series(session) -> dict[str, dict[str, list[pydicom.Dataset]]]:
    """PatientID -> SeriesInstanceUID -> its CT datasets (pydicom)."""
    out: dict[str, dict[str, list[pydicom.Dataset]]] = {}
    for ds in session["images"].values():
        if ds.Modality == "CT":
            out.setdefault(str(ds.PatientID), {}).setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    return out


def test_scan_writes_one_row_per_patient_with_a_ct_choosing_the_axial_series(session):
    proc = session["steps"]["scan"]
    # exit 1: written, with choices the user must look at (no usable MR; two AP radiographs tie)
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = {r["patient_id"]: r for r in csv_rows(session["work"] / "manifest.csv")}
    cts = ct_series(session)
    assert set(rows) == {key(session, pid) for pid in cts}
    for pid, series in cts.items():
        row = rows[key(session, pid)]
        axial = {uid for uid, dss in series.items() if "LOCALIZER" not in list(dss[0].ImageType)}
        assert row["ct_series"] in axial
        assert row["diagnosis"] == session["labels"][pid] and row["split"] in ("train", "val")
        chosen = [p for p, ds in session["images"].items() if str(ds.get("SeriesInstanceUID")) == row["ct_series"]]
        assert {p.parent for p in chosen} == {(session["work"] / row["ct"]).resolve()}
    assert sorted(r["split"] for r in rows.values()) == ["train", "val"]
    # no PatientID, name, UID of a study or description in the cells a manifest key or label lives in
    values = phi_values(session["images"])
    for row in rows.values():
        kept = [v for k, v in row.items() if k not in ("ct", "mr", "xray") and not k.endswith("_series")]
        assert leaked(",".join(kept), values) == []  # paths: the export's own names; *_series: the UID to read
    for name in ("manifest.scan.txt", "manifest.scan.json", "manifest.scan.html"):
        assert leaked((session["work"] / name).read_text(), values) == [], name
    assert leaked(proc.stdout + proc.stderr, values) == []


def test_validate_flags_the_gapped_ct(session):
    proc = session["steps"]["validate"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = {r["patient_id"]: r for r in csv_rows(session["work"] / "manifest.csv")}
    gapped = {key(session, pid) for pid, series in ct_series(session).items()
              if any(has_gap(dss) for uid, dss in series.items() if rows[key(session, pid)]["ct_series"] == uid)}
    assert gapped  # the tree has one: the oracle is not vacuous
    problems = json.loads((session["work"] / "problems.json").read_text())
    errors = {(p["patient_id"], p["modality"], p["check"]) for p in problems if p["severity"] == "error"}
    assert errors == {(k, "ct", "series_geometry") for k in gapped}


def test_preprocess_caches_every_readable_input_and_names_the_gapped_ct(session):
    proc = session["steps"]["preprocess"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads((session["work"] / "preprocess.json").read_text())
    failures = {(f["patient_id"], f["modality"], f["check"]) for f in summary["failures"]}
    problems = json.loads((session["work"] / "problems.json").read_text())
    assert failures == {(p["patient_id"], p["modality"], p["check"]) for p in problems if p["severity"] == "error"}
    assert summary["computed"] >= 1


def test_one_epoch_trains_with_the_gapped_ct_fed_as_zeros(session):
    proc = session["steps"]["train"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = session["work"] / "run"
    assert (run / "model.keras").is_file()
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] != "failed" and card["options"]["on_corrupt"] == "zeros"
    rows = csv_rows(session["work"] / "manifest.csv")
    for split in ("train", "val"):
        assert card["counts"][split]["patients"] == sum(r["split"] == split for r in rows)
    problems = json.loads((session["work"] / "problems.json").read_text())
    zeroed = [(z["patient_id"], z["modality"]) for split in ("train", "val") for z in card["excluded"][split]["zeroed"]]
    assert zeroed == [(p["patient_id"], p["modality"]) for p in problems if p["severity"] == "error"]  # each once


def test_predict_scores_the_unlabelled_manifest(session):
    scan_new, proc = session["steps"]["scan_new"], session["steps"]["predict"]
    assert scan_new.returncode == 1, scan_new.stderr[-3000:]
    new = csv_rows(session["work"] / "new_patients.csv")
    assert all(r["diagnosis"] == "" and r["split"] == "" for r in new)  # no labels: new patients
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = csv_rows(session["work"] / "predictions.csv")
    assert [r["patient_id"] for r in predictions] == [r["patient_id"] for r in new]
    assert {r["patient_id"] for r in predictions} == {key(session, pid) for pid in ct_series(session)}
    for r in predictions:
        assert float(r["p_healthy"]) + float(r["p_disease"]) == pytest.approx(1.0, abs=2e-6)


def test_predict_source_chooses_the_series_of_a_patient_s_folders(session):
    """``--source ct=DIR`` on a folder of a CT and its scout, ``mr=DIR`` on one of localizers and projections."""
    work, images = session["work"], session["images"]
    ct_folder = next(p.parent.parent for p, ds in images.items()
                     if ds.Modality == "CT" and "LOCALIZER" in list(ds.ImageType))
    in_folder = {p: ds for p, ds in images.items() if ct_folder in p.parents}
    ct = {}
    for ds in in_folder.values():
        ct.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    assert len(ct) > 1  # a folder of several series: the readers alone refuse it
    axial = [dss for dss in ct.values() if "LOCALIZER" not in list(dss[0].ImageType)]
    scouts = [dss for dss in ct.values() if "LOCALIZER" in list(dss[0].ImageType)]
    assert len(axial) == 1
    pid = str(axial[0][0].PatientID)
    mr_folder = next(p.parent.parent for p, ds in images.items() if ds.Modality == "MR" and str(ds.PatientID) == pid)
    mr_uids = {str(ds.SeriesInstanceUID) for p, ds in images.items() if mr_folder in p.parents}
    proc = medmulti("predict", "run", "--source", f"ct={ct_folder.relative_to(work)}", "--source",
                    f"mr={mr_folder.relative_to(work)}", "--json", "patient.json", "--no-progress", cwd=work,
                    config=session["config"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((work / "patient.json").read_text())
    chosen = record["inputs"]["ct"]["selection"]
    assert chosen["chosen"] == f"series {axial[0][0].SeriesNumber}" and chosen["images"] == len(axial[0])
    assert sorted(s["series"] for s in chosen["left_out"]) == sorted(f"series {s[0].SeriesNumber}" for s in scouts)
    assert all("LOCALIZER" in s["reason"] for s in chosen["left_out"])
    assert record["inputs"]["ct"]["status"] == "used"
    mr = record["inputs"]["mr"]
    assert mr["status"] == "absent" and mr["selection"]["chosen"] is None
    assert len(mr["selection"]["left_out"]) == len(mr_uids)  # every MR series judged, none taken
    # the same CT scored from the manifest of new patients gives the same probabilities
    row = next(r for r in csv_rows(work / "predictions.csv") if r["patient_id"] == key(session, pid))
    np.testing.assert_allclose([record["probabilities"][c] for c in ("healthy", "disease")],
                               [float(row["p_healthy"]), float(row["p_disease"])], atol=2e-6)
    assert f"series {axial[0][0].SeriesNumber}" in proc.stdout and "left out: ImageType holds LOCALIZER" in proc.stdout
    values = phi_values(images)
    assert leaked(proc.stdout + proc.stderr + (work / "patient.json").read_text(), values) == []
