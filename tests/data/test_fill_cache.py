"""PatientSequence.fill_cache: the served patients preprocessed into the cache up front
(in processes), after which the batches only read, and equal cold-computed batches."""

from __future__ import annotations

import numpy as np
import pytest

from medmulti.data.cache import PreprocessCache
from medmulti.data.sequence import PatientSequence
from medmulti.errors import CacheError


def test_fill_then_every_batch_is_read_from_the_cache(clean_cohort, spec, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=3, cache_dir=cache_dir,
                          progress=False, shuffle=False)
    summary = seq.fill_cache(workers=2, progress=False)
    assert summary.ok and summary.patients == len(seq.patient_ids)
    from medmulti.manifest import load_manifest

    rows = {r.key: r for r in load_manifest(clean_cohort.manifest, spec).rows}
    present = sum(1 for pid in seq.patient_ids for n in spec.names if rows[pid].sources.get(n) is not None)
    assert summary.computed + summary.cached == present  # building the sequence cached its first patient
    assert summary.computed >= present - len(spec.names)
    assert summary.absent == len(seq.patient_ids) * len(spec.names) - present
    entries = set(PreprocessCache(cache_dir).keys())

    import medmulti.study.preprocess as pre

    def refuse(*args, **kwargs):
        raise AssertionError("preprocess_study called: the cache was not filled")

    monkeypatch.setattr(pre, "preprocess_study", refuse)
    filled = [seq[i] for i in range(len(seq))]
    assert set(PreprocessCache(cache_dir).keys()) == entries  # nothing new written
    monkeypatch.undo()
    cold = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=3, progress=False, shuffle=False)
    for i, (x, y) in enumerate(filled):
        cx, cy = cold[i]
        for n in spec.names:
            np.testing.assert_allclose(x[n], cx[n], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(y, cy)
    again = seq.fill_cache(workers=1, progress=False)  # resumes: nothing left to compute
    assert again.computed == 0 and again.cached == summary.computed + summary.cached


def test_fill_only_covers_the_served_split(clean_cohort, spec, tmp_path):
    cache_dir = tmp_path / "cache"
    val = PatientSequence(clean_cohort.manifest, spec, "val", batch_size=2, cache_dir=cache_dir, progress=False)
    summary = val.fill_cache(workers=1, progress=False)
    assert summary.patients == len(val.patient_ids)


def test_fill_needs_a_cache(clean_cohort, spec):
    seq = PatientSequence(clean_cohort.manifest, spec, "train", batch_size=2, progress=False)
    with pytest.raises(CacheError):
        seq.fill_cache()
