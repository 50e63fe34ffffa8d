"""Small generated cohorts (real DICOM/NIfTI files from medmulti.sample_data), shared per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_helpers import tiny_spec

from medmulti.sample_data import make_sample_cohort
from medmulti.spec import StudySpec


@pytest.fixture(scope="session")
def spec() -> StudySpec:
    return tiny_spec()


@pytest.fixture(scope="session")
def spec_path(tmp_path_factory, spec) -> Path:
    p = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    spec.to_yaml(p)
    return p


@pytest.fixture(scope="session")
def clean_cohort(tmp_path_factory):
    """8 patients, no faults."""
    return make_sample_cohort(tmp_path_factory.mktemp("clean") / "cohort", 8, seed=1, faults=False, progress=False)


@pytest.fixture(scope="session")
def fault_cohort(tmp_path_factory):
    """10 patients with every fault of medmulti.sample_data.FAULT_KINDS."""
    return make_sample_cohort(tmp_path_factory.mktemp("faults") / "cohort", 10, seed=0, faults=True, progress=False)


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory, clean_cohort, spec):
    """A cache filled for the clean cohort (in this process)."""
    from medmulti.data.preprocess_all import preprocess_manifest

    cache = tmp_path_factory.mktemp("cache") / "c"
    summary = preprocess_manifest(clean_cohort.manifest, spec, cache, workers=0, progress=False)
    assert summary.ok, summary.summary()
    return cache


@pytest.fixture()
def cohort_copy(tmp_path, clean_cohort, warm_cache):
    """A private copy of the clean cohort and its cache, for tests that change files."""
    root = tmp_path / "cohort"
    shutil.copytree(clean_cohort.root, root)  # copy2: mtimes kept, so the cache stays valid
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    return root, cache


@pytest.fixture(scope="session")
def fault_cache(tmp_path_factory):
    """A cache folder shared by the fault-cohort tests (entries and validation records are reused)."""
    return tmp_path_factory.mktemp("fault_cache") / "c"
