"""Helpers shared by the tests of medmulti.data."""

from __future__ import annotations

import csv
from pathlib import Path

from medmulti.examples.cohort import sample_spec
from medmulti.spec import ModalitySpec, StudySpec


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


def read_rows(manifest: Path) -> list[dict[str, str]]:
    """The manifest as the csv module reads it (the oracle for labels and splits)."""
    lines = [ln for ln in manifest.read_text().splitlines() if not ln.startswith("#")]
    return list(csv.DictReader(lines))
