"""Shared fixtures for the manifest tests: a small spec and a manifest writer."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medmulti.spec import LabelSpec, ModalitySpec, StudySpec


@pytest.fixture
def spec() -> StudySpec:
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True),
            ModalitySpec(name="mr", kind="mr", required=False),
            ModalitySpec(name="xray", kind="xray", shape=(64, 64), required=False),
        ],
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        name="test",
    )


def write_manifest(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    cols = columns or ["patient_id", "split", "diagnosis", "ct", "mr", "xray"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


@pytest.fixture
def manifest_writer():
    return write_manifest
