"""The sample cohort: generated phantoms written as real CT, MR and X-ray files.

Each patient is a phantom in LPS millimetres: an ellipsoid body of soft tissue
(40 HU) in air, an organ (60 HU) and a vertebra-like bone cylinder, with random
size and position. Three independent findings, each present with probability 1/2
and each visible in exactly one modality:

1. CT: an enhancing round lesion (150 HU, radius 15-20 mm: 2.5-3.3 voxels of the
   6 mm model grid), bright in the lesion window (60-140 HU) where tissue and the
   organ are dark; bone is bright there too but also bright in the bone window,
   where the lesion is not. Absent from the MR and the X-ray.
2. MR: a hyperintense lesion elsewhere (radius 15-20 mm, about 2.4x the tissue
   signal), absent from the CT; the spec z-scores the MR over the body so the
   lesion stays distinct from the organ.
3. X-ray: a round opacity (radius 14-20 mm) on the projection only.

The findings are sized for the model grid (CT and MR 32^3 at 6 mm, X-ray 64^2 at
3 mm): each is several voxels across, so a small CNN with global max pooling
finds it from a few hundred patients.

``diagnosis`` is ``disease`` when at least two findings are present, else
``healthy``: no single modality carries the whole signal (a perfect
single-modality model reaches about 0.75 AUC; fusion can approach 1.0).

Files (all readable by SimpleITK and pydicom): the CT is an axial DICOM series
(Hounsfield units through RescaleSlope/Intercept, varying origin, slice spacing,
and for some patients a slightly oblique orientation); the MR is a sagittal NIfTI
(``.nii.gz``) with another field of view and a bias field; the X-ray is a DX or CR
DICOM projection of the same anatomy (DX and CR alternate; every third one is
MONOCHROME1). Identities are
pseudonyms (PatientID = the manifest ``patient_id``) and dates are made up.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._processes import WorkerPool, workers_allowed
from ..spec import LabelSpec, ModalitySpec, StudySpec
from .synth import affine_from_geometry, new_uid, write_dicom_series, write_dicom_xray, write_nifti

__all__ = ["SampleCohort", "make_sample_cohort", "sample_spec", "FAULT_KINDS"]

log = logging.getLogger("medmulti.sample_data")

#: Faults injected with ``faults=True``: name -> (modality or None, validation check).
FAULT_KINDS: dict[str, tuple[str | None, str]] = {
    "missing_mr": ("mr", "missing_modality"),
    "truncated_slice": ("ct", "corrupt_file"),
    "missing_slice": ("ct", "series_geometry"),
    "other_patient_file": ("ct", "patient_identity"),
    "two_splits": (None, "patient_in_two_splits"),
    "unknown_label": (None, "unknown_label"),
    "path_escapes_root": ("ct", "unsafe_path"),
}

TISSUE_HU, ORGAN_HU, BONE_HU, AIR_HU, BLOB_HU = 40.0, 60.0, 700.0, -1000.0, 150.0
MR_LESION = 900.0
CT_SHAPE = (40, 64, 64)
MR_SHAPE = (48, 56, 56)
MR_SPACING = 3.5
XR_SHAPE = (96, 96)
XR_SPACING = 2.0


def sample_spec() -> StudySpec:
    """Return the sample cohort's study spec (the same as ``data_manifests/sample_spec.yaml``).

    Returns
    -------
    StudySpec
        ``ct`` (reference, 3D, 32^3 at 6 mm, windows (centre, width) [100, 80]
        (lesion window) and [400, 1000] (bone window) HU), ``mr`` (3D, header
        registration: ``register: none``, z-score over the body clipped to
        [-5, 10]), ``xray`` (2D, 64x64); label
        column ``diagnosis`` with classes ``healthy``, ``disease``. All required.
    """
    return StudySpec(
        name="medmulti-sample",
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, spacing_mm=(6.0, 6.0, 6.0), shape=(32, 32, 32),
                         intensity={"windows": [[100, 80], [400, 1000]]}),
            ModalitySpec(name="mr", kind="mr", register="none",
                         intensity={"method": "zscore", "clip": [-5.0, 10.0]}),
            ModalitySpec(name="xray", kind="xray", shape=(64, 64)),
        ],
    )


@dataclass
class SampleCohort:
    """Where a generated cohort lies.

    Parameters
    ----------
    root : pathlib.Path
        The output folder.
    manifest : pathlib.Path
        ``root/manifest.csv``.
    spec : pathlib.Path
        ``root/spec.yaml``.
    faults : pathlib.Path
        ``root/faults.json``: list of ``{"patient_id", "modality", "check", "fault"}``
        (empty list without faults).
    findings : pathlib.Path
        ``root/findings.csv``: per patient which findings are present (ground truth).
    patient_ids : list of str
        The patients, in manifest order.
    """

    root: Path
    manifest: Path
    spec: Path
    faults: Path
    findings: Path
    patient_ids: list[str] = field(default_factory=list)

    def fault_records(self) -> list[dict[str, Any]]:
        """Return the injected faults (the content of ``faults.json``)."""
        return json.loads(self.faults.read_text(encoding="utf-8"))


def _rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _inside(points: np.ndarray, center: np.ndarray, axes: np.ndarray) -> np.ndarray:
    d = (points - center) / axes
    return np.einsum("...i,...i->...", d, d) <= 1.0


def _phantom(rng: np.random.Generator) -> dict[str, Any]:
    center = rng.uniform([-10, -10, -10], [10, 10, 10])
    axes = rng.uniform([50, 38, 36], [68, 52, 46])  # L, P, S semi-axes, mm
    organ_c = center + axes * np.array([-0.35, -0.1, 0.1])
    organ_a = axes * np.array([0.3, 0.35, 0.35])
    bone_c = center + np.array([0.0, axes[1] * 0.6, 0.0])
    bone_r = 9.0

    def point_inside(avoid: list[np.ndarray]) -> np.ndarray:
        for _ in range(1000):
            p = center + rng.uniform(-0.65, 0.65, 3) * axes
            if not _inside(p, center, axes * 0.65):
                continue
            if np.linalg.norm((p - bone_c)[:2]) < bone_r + 12:
                continue
            if all(np.linalg.norm(p - q) > 30 for q in avoid):
                return p
        raise RuntimeError("could not place a lesion")  # pragma: no cover - limits are generous

    blob = point_inside([])
    lesion = point_inside([blob])
    f = rng.random(3) < 0.5
    return {
        "center": center, "axes": axes, "organ_c": organ_c, "organ_a": organ_a, "bone_c": bone_c,
        "bone_r": bone_r, "blob": blob, "blob_r": rng.uniform(15, 20), "lesion": lesion,
        "lesion_r": rng.uniform(15, 20), "opacity": rng.uniform(0.15, 0.4, 2) * rng.choice([-1, 1], 2),
        "opacity_r": rng.uniform(14, 20), "findings": [bool(v) for v in f],
    }


def _world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _render_ct(ph: dict[str, Any], rng: np.random.Generator, n_slices: int = CT_SHAPE[0]) -> tuple[np.ndarray, np.ndarray]:
    shape = (n_slices, *CT_SHAPE[1:])
    dz = float(rng.choice([2.5, 3.0, 3.5])) * CT_SHAPE[0] / n_slices  # same field of view
    dxy = float(rng.uniform(3.0, 3.4))
    spacing = np.array([dz, dxy, dxy])
    rot = _rotation_z(rng.uniform(4, 9) * rng.choice([-1, 1])) if rng.random() < 0.25 else np.eye(3)
    direction = rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    extent = (np.array(shape) - 1) * spacing
    centre = ph["center"] + rng.uniform(-8, 8, 3)
    origin = centre - direction @ (extent / 2)
    affine = affine_from_geometry(spacing, origin, direction)
    w = _world(shape, affine)
    vol = np.full(shape, AIR_HU)
    body = _inside(w, ph["center"], ph["axes"])
    vol[body] = TISSUE_HU
    vol[_inside(w, ph["organ_c"], ph["organ_a"]) & body] = ORGAN_HU
    bone = (np.linalg.norm((w - ph["bone_c"])[..., :2], axis=-1) <= ph["bone_r"]) & body
    vol[bone] = BONE_HU
    if ph["findings"][0]:
        vol[(np.linalg.norm(w - ph["blob"], axis=-1) <= ph["blob_r"]) & body] = BLOB_HU
    vol += rng.normal(0, 8, shape)
    return vol, affine


def _render_mr(ph: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # sagittal: array axes (L, -S, P): slices left-right, rows head-to-feet, columns front-to-back
    direction = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    spacing = np.full(3, MR_SPACING)
    extent = (np.array(MR_SHAPE) - 1) * spacing
    centre = ph["center"] + rng.uniform(-12, 12, 3)
    origin = centre - direction @ (extent / 2)
    affine = affine_from_geometry(spacing, origin, direction)
    w = _world(MR_SHAPE, affine)
    vol = np.zeros(MR_SHAPE)
    body = _inside(w, ph["center"], ph["axes"])
    vol[body] = 300.0
    vol[_inside(w, ph["organ_c"], ph["organ_a"]) & body] = 380.0
    vol[(np.linalg.norm((w - ph["bone_c"])[..., :2], axis=-1) <= ph["bone_r"]) & body] = 80.0
    if ph["findings"][1]:
        vol[(np.linalg.norm(w - ph["lesion"], axis=-1) <= ph["lesion_r"]) & body] = MR_LESION
    grad = rng.normal(0, 1, 3)
    grad /= np.linalg.norm(grad)
    bias = 1.0 + 0.2 * ((w - ph["center"]) @ grad) / 100.0
    vol = vol * bias + rng.normal(0, 12, MR_SHAPE)
    return np.clip(vol, 0, None).astype(np.float32), affine


def _render_xray(ph: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    # PA projection along P: rows run head-to-feet (S down), columns along L
    rows, cols = XR_SHAPE
    z = ph["center"][2] + (rows / 2 - np.arange(rows) - 0.5) * XR_SPACING
    x = ph["center"][0] + (np.arange(cols) - cols / 2 + 0.5) * XR_SPACING
    zz, xx = np.meshgrid(z, x, indexing="ij")
    c, a = ph["center"], ph["axes"]
    q = 1 - ((xx - c[0]) / a[0]) ** 2 - ((zz - c[2]) / a[2]) ** 2
    body = 2 * a[1] * np.sqrt(np.clip(q, 0, None))
    qb = ph["bone_r"] ** 2 - (xx - ph["bone_c"][0]) ** 2
    bone = 2 * np.sqrt(np.clip(qb, 0, None)) * (q > 0)
    path = body + 6.0 * bone  # bone attenuates ~6x soft tissue
    if ph["findings"][2]:
        oc = c[[0, 2]] + ph["opacity"] * a[[0, 2]]
        d2 = ((xx - oc[0]) ** 2 + (zz - oc[1]) ** 2) / ph["opacity_r"] ** 2
        path = path + 80.0 * np.sqrt(np.clip(1 - d2, 0, None))
    value = 200 + 3600 * (1 - np.exp(-path / 90.0)) + rng.normal(0, 20, XR_SHAPE)
    return np.clip(value, 0, 4095)


def _split(labels: list[str], rng: np.random.Generator) -> list[str]:
    out = [""] * len(labels)
    for cls in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == cls]
        rng.shuffle(idx)
        n = len(idx)
        n_val = int(round(0.2 * n))
        n_test = int(round(0.2 * n))
        for k, i in enumerate(idx):
            out[i] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    return out


def _write_patient(root: Path, seed: int, ct_slices: int, i: int) -> tuple[dict[str, str], list[bool]]:
    """Render and write one patient; return its manifest record and findings."""
    pid = f"SYN{i + 1:04d}"
    prng = np.random.default_rng([seed, i])
    ph = _phantom(prng)
    identity = {"PatientID": pid, "PatientName": f"SYNTHETIC^{pid}", "PatientBirthDate": "19700101",
                "StudyDate": f"2026{1 + i % 12:02d}{1 + i % 28:02d}"}
    pdir = root / pid
    vol, aff = _render_ct(ph, prng, ct_slices)
    write_dicom_series(vol, pdir / "ct", affine=aff, modality="CT", patient=identity,
                       study_uid=new_uid((seed, pid, "ct-study")), series_uid=new_uid((seed, pid, "ct-series")),
                       frame_of_reference_uid=new_uid((seed, pid, "for")),
                       extra={"WindowCenter": 40.0, "WindowWidth": 400.0, "KVP": 120.0,
                              "ConvolutionKernel": "STANDARD", "BodyPartExamined": "ABDOMEN",
                              "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PatientPosition": "HFS",
                              "SeriesDescription": "SYNTHETIC CT", "StudyDescription": "SYNTHETIC STUDY"})
    mr, maff = _render_mr(ph, prng)
    write_nifti(mr, pdir / "mr.nii.gz", affine=maff)
    xr = _render_xray(ph, prng)
    mono1 = i % 3 == 2  # every third X-ray is MONOCHROME1 (stored inverted)
    write_dicom_xray(4095 - xr if mono1 else xr, pdir / "xray.dcm", modality="CR" if i % 2 else "DX",
                     pixel_spacing=(XR_SPACING, XR_SPACING), photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                     window=(2048.0, 4096.0), patient=identity, study_uid=new_uid((seed, pid, "xr-study")),
                     extra={"ImageType": ["ORIGINAL", "PRIMARY"], "PatientOrientation": ["L", "F"],
                            "SeriesDescription": "SYNTHETIC CHEST PA"})
    label = "disease" if sum(ph["findings"]) >= 2 else "healthy"
    record = {"patient_id": pid, "diagnosis": label, "ct": f"{pid}/ct", "mr": f"{pid}/mr.nii.gz",
              "xray": f"{pid}/xray.dcm"}
    return record, list(ph["findings"])


def make_sample_cohort(
    out: str | PathLike[str],
    n_patients: int = 40,
    seed: int = 0,
    faults: bool = True,
    *,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
    ct_slices: int = CT_SHAPE[0],
) -> SampleCohort:
    """Generate the sample cohort as real DICOM/NIfTI files with a manifest and a spec.

    Parameters
    ----------
    out : str or PathLike
        Output folder (created; must be empty unless ``overwrite``).
    n_patients : int
        Number of patients (at least 10 with ``faults=True``, else at least 1).
    seed : int
        Random seed: the same seed gives the same phantoms, labels, splits and
        faults (DICOM instance UIDs differ between runs).
    faults : bool
        Inject one of each fault in :data:`FAULT_KINDS` into distinct patients and
        list them in ``faults.json``.
    progress : bool
        Show a progress bar.
    overwrite : bool
        Delete a non-empty ``out`` first.
    workers : int
        Processes writing patients in parallel (the result does not depend on it).
    ct_slices : int
        CT slices per patient (default 40); fewer slices keep the same field of view
        with thicker slices (quick tests).

    Returns
    -------
    SampleCohort
        Paths of the manifest, spec, faults and findings files.

    Raises
    ------
    ValueError
        Too few patients, or ``out`` is not empty and ``overwrite`` is False.
    """
    from tqdm.auto import tqdm

    n = int(n_patients)
    if not 8 <= int(ct_slices) <= 400:
        raise ValueError(f"ct_slices must be between 8 and 400, got {ct_slices}")
    if n < (10 if faults else 1):
        raise ValueError(f"n_patients must be at least {10 if faults else 1}, got {n}")
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise ValueError(f"output folder {str(root)!r} is not empty (use overwrite=True)")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pids = [f"SYN{i:04d}" for i in range(1, n + 1)]
    job = functools.partial(_write_patient, root, seed, int(ct_slices))
    bar = tqdm(total=n, desc="sample-data", unit="patient", disable=not progress)
    results: list[tuple[dict[str, str], list[bool]]] = []
    try:
        if workers <= 1 or not workers_allowed("sample-data generation", "default"):
            for i in range(n):
                results.append(job(i))
                bar.update(1)
        else:
            with WorkerPool(workers) as pool:
                for res in pool.map(job, range(n), chunksize=4):
                    results.append(res)
                    bar.update(1)
    finally:
        bar.close()
    records = [r for r, _ in results]
    findings = [f for _, f in results]
    splits = _split([r["diagnosis"] for r in records], rng)
    for r, s in zip(records, splits):
        r["split"] = s
    fault_list: list[dict[str, Any]] = []
    if faults:
        chosen = [int(v) for v in rng.choice(n, size=len(FAULT_KINDS) + 1, replace=False)]
        donor = chosen[-1]
        for (fault, (modality, check)), i in zip(FAULT_KINDS.items(), chosen):
            r = records[i]
            pid = r["patient_id"]
            ct_dir = root / pid / "ct"
            slices = sorted(ct_dir.iterdir())
            if fault == "missing_mr":
                (root / pid / "mr.nii.gz").unlink()
                r["mr"] = ""
            elif fault == "truncated_slice":
                f = slices[len(slices) // 2]
                data = f.read_bytes()
                f.write_bytes(data[: len(data) - len(data) // 3])
            elif fault == "missing_slice":
                slices[len(slices) // 2].unlink()
            elif fault == "other_patient_file":
                other = sorted((root / records[donor]["patient_id"] / "ct").iterdir())
                shutil.copyfile(other[len(other) // 2], ct_dir / "IM9999.dcm")
            elif fault == "two_splits":
                dup = dict(r)
                dup["split"] = "test" if r["split"] != "test" else "train"
                records.append(dup)
            elif fault == "unknown_label":
                r["diagnosis"] = "unknown"
            elif fault == "path_escapes_root":
                r["ct"] = f"../{pid}/ct"
            fault_list.append({"patient_id": pid, "modality": modality, "check": check, "fault": fault})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        fh.write("# format: 1\n")
        w = csv.DictWriter(fh, fieldnames=["patient_id", "split", "diagnosis", "ct", "mr", "xray"])
        w.writeheader()
        w.writerows(records)
    with open(root / "findings.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "ct_blob", "mr_lesion", "xray_opacity", "diagnosis"])
        for pid, f in zip(pids, findings):
            w.writerow([pid, *[int(v) for v in f], "disease" if sum(f) >= 2 else "healthy"])
    spec_path = root / "spec.yaml"
    sample_spec().to_yaml(spec_path)
    faults_path = root / "faults.json"
    faults_path.write_text(json.dumps(fault_list, indent=2) + "\n", encoding="utf-8")
    log.info("wrote a %d-patient sample cohort (%d faults)", n, len(fault_list))
    return SampleCohort(root=root, manifest=manifest, spec=spec_path, faults=faults_path,
                        findings=root / "findings.csv", patient_ids=pids)


if __name__ == "__main__":  # pragma: no cover
    import sys

    make_sample_cohort(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40)
    os._exit(0)
