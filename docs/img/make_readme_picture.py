"""Regenerate ``docs/img/inspect_SYN0001.png``, the picture in the README and docs/index.md.

Run from the repository root: ``python docs/img/make_readme_picture.py``.

It writes the sample cohort (4 patients, no faults, seed 0) into a temporary folder and
draws patient SYN0001 with :func:`medmulti.render_study`, as ``medmulti inspect`` does,
but on a finer study grid than the sample spec's 32^3 model grid (112 x 112 in-plane at
1.5 mm, 96 slices at 1.25 mm), so that the anatomy and the alignment can be seen.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import medmulti as mm
from medmulti.examples import sample_spec

OUT = Path(__file__).resolve().parent / "inspect_SYN0001.png"


def main(out: Path = OUT) -> Path:
    """Write the picture to ``out`` and return its path."""
    data = sample_spec().to_dict()
    ct = next(m for m in data["modalities"] if m["name"] == "ct")
    ct["spacing_mm"], ct["shape"] = [1.25, 1.5, 1.5], [96, 112, 112]
    spec = mm.StudySpec.from_dict(data)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = mm.make_sample_cohort(Path(tmp) / "study", n_patients=4, seed=0, faults=False, progress=False)
        pid = cohort.patient_ids[0]
        sources = {"ct": cohort.root / pid / "ct", "mr": cohort.root / pid / "mr.nii.gz",
                   "xray": cohort.root / pid / "xray.dcm"}
        mm.render_study(sources, spec, out, patient_id=pid, dpi=100)
    return out


if __name__ == "__main__":
    print(f"wrote {main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)}")
