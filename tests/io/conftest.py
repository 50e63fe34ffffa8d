"""Fixtures for the reader tests: generated series with known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import oblique_direction

from medmulti.examples import synth


@pytest.fixture(scope="session")
def volume_hu() -> np.ndarray:
    """A small integer-valued CT-like volume (z, y, x) in HU."""
    rng = np.random.default_rng(42)
    return rng.integers(-1000, 2000, size=(12, 20, 24)).astype(np.float64)


@pytest.fixture(scope="session")
def oblique_affine() -> np.ndarray:
    return synth.affine_from_geometry((2.5, 0.7, 0.8), (10.0, -20.0, 30.0), oblique_direction())


@pytest.fixture(scope="session")
def long_series(tmp_path_factory):
    """A 120-slice series written in shuffled file order; returns (folder, volume, affine)."""
    rng = np.random.default_rng(7)
    vol = rng.integers(-1024, 3000, size=(120, 8, 10)).astype(np.float64)
    affine = synth.affine_from_geometry((1.25, 0.6, 0.6), (-50.0, -60.0, -200.0))
    folder = tmp_path_factory.mktemp("long")
    synth.write_dicom_series(vol, folder, affine=affine, order=rng.permutation(120))
    return folder, vol, affine
