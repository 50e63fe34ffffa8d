"""Shared fixtures for the reliability and privacy battery."""

from __future__ import annotations

import pytest

from medmulti.spec import LabelSpec, ModalitySpec, StudySpec


@pytest.fixture(scope="session")
def seeds(tmp_path_factory):
    """The fuzz seed set (bundled pydicom/nibabel files + synthetic files)."""
    from medmulti_testing.seeds import build_seeds

    return build_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture
def small_spec() -> StudySpec:
    """A CT + optional MR + optional X-ray spec with tiny target grids."""
    return StudySpec(
        modalities=[
            ModalitySpec(name="ct", kind="ct", reference=True, shape=(8, 12, 12), spacing_mm=(2.5, 1.6, 1.6)),
            ModalitySpec(name="mr", kind="mr", required=False),
            ModalitySpec(name="xray", kind="xray", shape=(16, 16), required=False),
        ],
        labels=LabelSpec(column="diagnosis", classes=["healthy", "disease"]),
        name="reliability",
    )

