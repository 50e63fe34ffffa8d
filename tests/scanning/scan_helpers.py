"""A generated hospital export for scan tests: several studies, decoy series, no extensions, shuffled folders.

Each patient gets an older study (one CT: a decoy the newer study must win over) and a
newer study with a planted CT (axial, most images, thinnest), a thicker CT
reconstruction, a CT localizer (two files, two orientations), a derived coronal CT
reformat, a planted 3D T1 MR, a 2D T2 MR with more images, an MR 3-plane localizer, a PA
radiograph (planted) and a lateral one. Files have random names without extension in
random folders. The planted series are returned by SeriesInstanceUID (and file, for the
X-ray), so tests compare the scan's choice with what was written, not with its own output.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medmulti.examples.synth import affine_from_geometry, new_uid, write_dicom_series, write_dicom_xray

SPEC_YAML = """\
format: 1
name: scan-tests
labels: {column: diagnosis, classes: [healthy, disease]}
modalities:
  - {name: ct, kind: ct, reference: true, spacing_mm: [2, 2, 2], shape: [16, 16, 16]}
  - {name: mr, kind: mr, required: false}
  - {name: xray, kind: xray, shape: [32, 32], required: false}
"""

AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
SAGITTAL = np.column_stack([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CORONAL = np.column_stack([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass
class PlantedPatient:
    """What was written for one patient (identity values are what the PHI tests grep for)."""

    identity: dict[str, str]
    ct: str = ""            # SeriesInstanceUID of the planted CT
    mr: str = ""
    xray: Path | None = None
    older_ct: str = ""
    decoys: dict[str, str] = field(default_factory=dict)  # name -> SeriesInstanceUID


def _rename_randomly(paths: list[Path], rng: random.Random) -> None:
    for p in paths:
        p.rename(p.with_name(f"{rng.getrandbits(40):010x}"))


def _series(root: Path, rng: random.Random, shape: tuple[int, int, int], spacing: tuple[float, float, float],
            direction: np.ndarray, **kw) -> str:
    folder = root / f"{rng.getrandbits(32):08x}"
    uid = kw.pop("series_uid", None) or new_uid()
    vol = np.random.default_rng(rng.getrandbits(32)).integers(-100, 200, size=shape).astype(np.int16)
    paths = write_dicom_series(vol, folder, affine=affine_from_geometry(spacing, (-20.0, -20.0, -10.0), direction),
                               series_uid=uid, filename=f"{rng.getrandbits(20):05x}_{{index:03d}}", **kw)
    _rename_randomly(paths, rng)
    return uid


def write_export(root: Path, n_patients: int = 2, seed: int = 0) -> list[PlantedPatient]:
    """Write the export under ``root``; return what was planted per patient."""
    rng = random.Random(seed)
    out = []
    for i in range(n_patients):
        identity = {"PatientID": f"HOSP{731000 + i}", "PatientName": f"Testperson^Gwendolyn{i}",
                    "PatientBirthDate": "19610423", "AccessionNumber": f"ACC{880100 + i}"}
        p = PlantedPatient(identity=identity)
        pdir = root / f"{rng.getrandbits(32):08x}"
        old = {"patient": dict(identity, StudyDate="20190101", AccessionNumber=f"ACC{770100 + i}"),
               "study_uid": new_uid()}
        new = {"patient": dict(identity, StudyDate="20210601"), "study_uid": new_uid()}
        ct = {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SeriesDescription": "CHEST W/O"}
        p.older_ct = _series(pdir / "a", rng, (8, 16, 16), (5.0, 1.0, 1.0), AXIAL, modality="CT", series_number=2,
                             extra=ct, **old)
        p.ct = _series(pdir / "b", rng, (12, 16, 16), (2.0, 1.0, 1.0), AXIAL, modality="CT", series_number=3,
                       extra=ct, **new)
        p.decoys["thick"] = _series(pdir / "b", rng, (6, 16, 16), (5.0, 1.0, 1.0), AXIAL, modality="CT",
                                    series_number=4, extra=ct, **new)
        scout = new_uid()
        folder = pdir / "b" / f"{rng.getrandbits(32):08x}"
        loc = {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SeriesDescription": "SCOUT"}
        for k, direction in enumerate((SAGITTAL, CORONAL)):
            paths = write_dicom_series(np.full((1, 16, 16), 7 * i + k, np.int16), folder, modality="CT", series_number=1,
                                       affine=affine_from_geometry((1.0, 1.0, 1.0), (0, 0, 0), direction),
                                       series_uid=scout, filename=f"L{k}_{{index}}", extra=loc, **new)
            _rename_randomly(paths, rng)
        p.decoys["scout"] = scout
        p.decoys["mpr"] = _series(pdir / "b", rng, (12, 16, 16), (2.0, 1.0, 1.0), CORONAL, modality="CT",
                                  series_number=5, extra={"ImageType": ["DERIVED", "SECONDARY", "MPR"],
                                                          "SeriesDescription": "COR MPR"}, **new)
        mr_new = dict(new, rescale_intercept=0.0)
        p.mr = _series(pdir / "b", rng, (10, 16, 16), (1.0, 1.0, 1.0), SAGITTAL, modality="MR", series_number=7,
                       extra={"ImageType": ["ORIGINAL", "PRIMARY", "M"], "MRAcquisitionType": "3D",
                              "SeriesDescription": "T1 MPRAGE SAG"}, **mr_new)
        p.decoys["t2"] = _series(pdir / "b", rng, (14, 16, 16), (4.0, 1.0, 1.0), AXIAL, modality="MR",
                                 series_number=8, extra={"ImageType": ["ORIGINAL", "PRIMARY", "M"],
                                                         "MRAcquisitionType": "2D", "SeriesDescription": "AX T2"},
                                 **mr_new)
        p.decoys["mr_loc"] = _series(pdir / "b", rng, (3, 16, 16), (10.0, 1.0, 1.0), AXIAL, modality="MR",
                                     series_number=6, extra={"ImageType": ["ORIGINAL", "PRIMARY", "M"],
                                                             "SeriesDescription": "3-plane localizer"}, **mr_new)
        xfolder = pdir / "c"
        xfolder.mkdir(parents=True)
        pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 4000, size=(32, 32)).astype(np.uint16)
        xstudy = new_uid()
        pa = write_dicom_xray(pixels, xfolder / f"{rng.getrandbits(40):010x}", modality="DX",
                              patient=dict(identity, StudyDate="20210602"), study_uid=xstudy, series_number=1,
                              extra={"ViewPosition": "PA", "ImageType": ["ORIGINAL", "PRIMARY"]})
        write_dicom_xray(4000 - pixels, xfolder / f"{rng.getrandbits(40):010x}", modality="DX",
                         patient=dict(identity, StudyDate="20210602"), study_uid=xstudy, series_number=2,
                         extra={"ViewPosition": "LL", "ImageType": ["ORIGINAL", "PRIMARY"]})
        p.xray = pa
        out.append(p)
    return out
