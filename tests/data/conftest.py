"""Small generated cohorts (real DICOM/NIfTI files from medmulti.examples.cohort), shared per session.

Under pytest-xdist the cohorts and the warm cache are built once for all workers (in the
session's common temporary folder, under a file lock) instead of once per worker.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
from data_helpers import tiny_spec

from medmulti.examples.cohort import SampleCohort, make_sample_cohort
from medmulti.spec import StudySpec


def _shared(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """Build ``name`` once per test session (all xdist workers) and return its folder."""
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent
    target = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".done").exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            (target / ".done").touch()
    return target


def _cohort(root: Path) -> SampleCohort:
    ids = [p.name for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith("SYN")]
    return SampleCohort(root=root, manifest=root / "manifest.csv", spec=root / "spec.yaml",
                        faults=root / "faults.json", findings=root / "findings.csv", patient_ids=ids)


@pytest.fixture(scope="session")
def spec() -> StudySpec:
    return tiny_spec()


@pytest.fixture(scope="session")
def spec_path(tmp_path_factory, spec) -> Path:
    p = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    spec.to_yaml(p)
    return p


@pytest.fixture(scope="session")
def clean_cohort(tmp_path_factory, worker_id):
    """8 patients, no faults."""
    root = _shared(tmp_path_factory, worker_id, "data-clean",
                   lambda d: make_sample_cohort(d, 8, seed=1, faults=False, progress=False))
    return _cohort(root)


@pytest.fixture(scope="session")
def fault_cohort(tmp_path_factory, worker_id):
    """10 patients with every fault of medmulti.examples.cohort.FAULT_KINDS."""
    root = _shared(tmp_path_factory, worker_id, "data-faults",
                   lambda d: make_sample_cohort(d, 10, seed=0, faults=True, progress=False))
    return _cohort(root)


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory, worker_id, clean_cohort, spec):
    """A cache filled for the clean cohort (in this process)."""
    from medmulti.data.cache_fill import preprocess_manifest

    def build(d):
        summary = preprocess_manifest(clean_cohort.manifest, spec, d, workers=0, progress=False)
        assert summary.ok, summary.summary()

    return _shared(tmp_path_factory, worker_id, "data-warm-cache", build)


@pytest.fixture(scope="session")
def fault_cache(tmp_path_factory):
    """A cache folder shared by the fault-cohort tests (entries and validation records are reused)."""
    return tmp_path_factory.mktemp("fault_cache") / "c"


@pytest.fixture()
def cohort_copy(tmp_path, clean_cohort, warm_cache):
    """A private copy of the clean cohort and its cache, for tests that change files."""
    root = tmp_path / "cohort"
    shutil.copytree(clean_cohort.root, root)  # copy2: mtimes kept, so the cache stays valid
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    return root, cache
