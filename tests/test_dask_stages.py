"""validate and preprocess on a real Dask cluster (loopback) give what the local executor gives.

The oracle is the local run: the same report records, the same cache keys with byte-identical
arrays. The CLI is run in a subprocess with ``--executor dask`` exactly as docs/dask.md shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from medmulti.data.cache_fill import preprocess_manifest  # noqa: E402
from medmulti.examples.cohort import make_sample_cohort  # noqa: E402
from medmulti.manifest import validate_manifest  # noqa: E402
from medmulti.spec import StudySpec  # noqa: E402


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask") / "cohort"
    make_sample_cohort(root, 10, seed=2, faults=True, progress=False)
    return root


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def _records(report):
    return sorted(json.dumps(p.to_dict(), sort_keys=True) for p in report.problems)


def test_validate_on_dask_equals_local(cohort, client):
    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    local = validate_manifest(cohort / "manifest.csv", spec, workers=2, progress=False)
    dask = validate_manifest(cohort / "manifest.csv", spec, executor=client, progress=False)
    assert not local.ok and _records(local) == _records(dask)
    assert local.n_files == dask.n_files


def _entries(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in cache.rglob("*.npy")}


def test_preprocess_on_dask_writes_the_same_entries(cohort, client, tmp_path):
    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    local = preprocess_manifest(cohort / "manifest.csv", spec, tmp_path / "local", workers=2, progress=False)
    dask = preprocess_manifest(cohort / "manifest.csv", spec, tmp_path / "dask", executor=client, progress=False)
    # rows sharing an input (the cohort lists one patient in two splits) find it computed or
    # cached depending on the order the workers reach it: the sum is what is fixed
    assert local.computed + local.cached == dask.computed + dask.cached > 0 and local.absent == dask.absent
    assert sorted(map(str, local.failures)) == sorted(map(str, dask.failures))
    a, b = _entries(tmp_path / "local"), _entries(tmp_path / "dask")
    assert a and a == b


def test_cli_validate_with_executor_dask_in_a_fresh_process(cohort, tmp_path):
    out = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, "-m", "medmulti", "validate", str(cohort / "manifest.csv"), "--spec",
                           str(cohort / "spec.yaml"), "--executor", "dask", "--workers", "2", "--no-progress",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    local = validate_manifest(cohort / "manifest.csv", spec, workers=1, progress=False)
    assert sorted(json.dumps(r, sort_keys=True) for r in json.loads(out.read_text())) == _records(local)


def test_scan_on_dask_chooses_what_the_local_scan_chooses(cohort, client, tmp_path):
    from medmulti.scanning import scan

    spec = StudySpec.from_yaml(cohort / "spec.yaml")
    secret = tmp_path / "secret"
    local = scan(cohort, spec, secret=secret, workers=2, progress=False)
    dask = scan(cohort, spec, secret=secret, executor=client, progress=False)
    out = tmp_path / "m.csv"
    assert local.manifest_text(out) == dask.manifest_text(out)
    assert len(local.rows) >= 9  # the fault cohort: one patient listed twice, one without a readable CT
