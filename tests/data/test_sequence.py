"""PatientSequence on real generated cohorts: batches, labels, order, policies, cache use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import read_rows

import medmulti
from medmulti.data.cache import PreprocessCache
from medmulti.data.sequence import MultiModalSequence, PatientSequence
from medmulti.errors import CorruptFileError, ManifestError, MedmultiError, MissingFileError, SeriesGeometryError


def _seq(cohort, spec, cache, split="train", **kw):
    kw.setdefault("progress", False)
    return PatientSequence(cohort.manifest if hasattr(cohort, "manifest") else cohort, spec, split,
                           cache_dir=cache, **kw)


def _onehot(classes, name):
    out = np.zeros(len(classes), np.float32)
    out[classes.index(name)] = 1
    return out


def test_public_names():
    assert medmulti.PatientSequence is PatientSequence is MultiModalSequence


def test_batches_shapes_dtypes_keys_labels(clean_cohort, spec, warm_cache):
    seq = _seq(clean_cohort, spec, warm_cache, batch_size=3)
    csv_rows = {r["patient_id"]: r for r in read_rows(clean_cohort.manifest)}
    train = [p for p, r in csv_rows.items() if r["split"] == "train"]
    assert sorted(seq.patient_ids) == sorted(train)
    assert len(seq) == -(-len(train) // 3)
    assert seq.input_names == ["ct", "mr", "xray"] and seq.optional_modalities == []
    ids = seq.patient_ids
    for i in range(len(seq)):
        x, y = seq[i]
        b = min(3, len(train) - 3 * i)  # the last partial batch is kept
        assert set(x) == {"ct", "mr", "xray"}
        assert x["ct"].shape == (b, 16, 16, 16, 2)  # two CT windows in the spec
        assert x["mr"].shape == (b, 16, 16, 16, 1)  # on the CT reference grid
        assert x["xray"].shape == (b, 32, 32, 1)
        assert all(v.dtype == np.float32 for v in x.values())
        want = np.stack([_onehot(spec.labels.classes, csv_rows[p]["diagnosis"]) for p in ids[3 * i:3 * i + b]])
        np.testing.assert_array_equal(y, want)
        for j, pid in enumerate(ids[3 * i:3 * i + b]):
            one = seq.get_patient(pid)
            for n in ("ct", "mr", "xray"):
                np.testing.assert_array_equal(x[n][j], one[n])
    with pytest.raises(IndexError):
        seq[len(seq)]


def test_integer_labels(clean_cohort, spec, warm_cache):
    from medmulti.spec import LabelSpec, StudySpec

    spec_int = StudySpec(modalities=spec.modalities, labels=LabelSpec(classes=spec.labels.classes,
                                                                      column="diagnosis", encoding="int"))
    seq = _seq(clean_cohort, spec_int, warm_cache, batch_size=4, shuffle=False)
    csv_rows = {r["patient_id"]: r for r in read_rows(clean_cohort.manifest)}
    _, y = seq[0]
    assert y.dtype == np.int64 and y.shape == (min(4, seq.num_patients),)
    assert list(y) == [spec.labels.classes.index(csv_rows[p]["diagnosis"]) for p in seq.patient_ids[:len(y)]]


def test_same_seed_same_batches_every_patient_once_per_epoch(clean_cohort, spec, warm_cache):
    a = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=7, augment=True)
    b = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=7, augment=True)
    c = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=8, augment=True)
    orders = []
    for epoch in range(3):
        assert a.patient_ids == b.patient_ids
        assert sorted(a.patient_ids) == sorted(set(a.patient_ids))  # each patient exactly once
        orders.append(a.patient_ids)
        for i in range(len(a)):
            xa, ya = a[i]
            xb, yb = b[i]
            for n in xa:
                np.testing.assert_array_equal(xa[n], xb[n])
            np.testing.assert_array_equal(ya, yb)
        a.on_epoch_end()
        b.on_epoch_end()
    assert len({tuple(o) for o in orders}) > 1  # reshuffled per epoch
    # another seed: another order or other augmentation draws
    fresh = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=7, augment=True)
    assert c.patient_ids != fresh.patient_ids or not np.array_equal(c[0][0]["ct"], fresh[0][0]["ct"])
    # augmentation changes the arrays but not the labels
    plain = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=7)
    xa, ya = _seq(clean_cohort, spec, warm_cache, batch_size=2, seed=7, augment=True)[0]
    xp, yp = plain[0]
    np.testing.assert_array_equal(ya, yp)
    assert not np.array_equal(xa["ct"], xp["ct"])


def test_val_split_not_shuffled_and_augment_refused(clean_cohort, spec, warm_cache):
    rows = [r["patient_id"] for r in read_rows(clean_cohort.manifest) if r["split"] == "val"]
    if not rows:
        pytest.skip("no val rows in this cohort")
    seq = _seq(clean_cohort, spec, warm_cache, split="val")
    assert seq.patient_ids == rows
    with pytest.raises(ValueError):
        _seq(clean_cohort, spec, warm_cache, split="val", augment=True)
    with pytest.raises(ValueError):
        _seq(clean_cohort, spec, warm_cache, on_missing="ignore")


def test_class_balance_and_sample_weights(clean_cohort, spec, warm_cache):
    seq = _seq(clean_cohort, spec, warm_cache, batch_size=64, sample_weights=True, shuffle=False)
    x, y, w = seq[0]
    cls = y.argmax(1)
    n, k = len(cls), len(set(cls.tolist()))
    for c in set(cls.tolist()):
        np.testing.assert_allclose(w[cls == c], n / (k * np.sum(cls == c)))
    bal = _seq(clean_cohort, spec, warm_cache, batch_size=64, class_balance=True, seed=3)
    assert len(bal) == len(seq) and bal.num_patients == seq.num_patients


# ------------------------------------------------------------------ policies on the fault cohort
def _faults(cohort):
    return cohort.fault_records()


def _split_of(cohort):
    out = {}
    for r in read_rows(cohort.manifest):
        out.setdefault(r["patient_id"], set()).add(r["split"])
    return out


def test_error_policy_raises_the_first_problem_typed(fault_cohort, spec, fault_cache):
    splits = _split_of(fault_cohort)
    faulted = {f["patient_id"]: f for f in _faults(fault_cohort)}
    first = next(r["patient_id"] for r in read_rows(fault_cohort.manifest)
                 if r["split"] == "train" and r["patient_id"] in faulted)
    with pytest.raises(MedmultiError) as info:
        _seq(fault_cohort, spec, fault_cache)
    err = info.value
    assert err.patient_id == first
    fault = faulted[first]
    if fault["modality"]:
        assert err.modality == fault["modality"]
        assert err.path and fault["modality"] in err.path
    assert fault["check"] in str(err)
    expected = {"corrupt_file": CorruptFileError, "series_geometry": SeriesGeometryError,
                "missing_modality": MissingFileError, "unknown_label": ManifestError}.get(fault["check"], MedmultiError)
    assert isinstance(err, expected)
    assert splits  # the oracle parsed


def test_skip_policy_excludes_exactly_the_faulted_patients(fault_cohort, spec, fault_cache):
    faulted = {f["patient_id"] for f in _faults(fault_cohort)}
    for split in ("train", "val", "test"):
        clean = {r["patient_id"] for r in read_rows(fault_cohort.manifest)
                 if r["split"] == split and r["patient_id"] not in faulted}
        if not clean:
            continue
        seq = _seq(fault_cohort, spec, fault_cache, split=split, on_missing="skip", on_corrupt="skip")
        assert set(seq.patient_ids) == clean
        want_skipped = {r["patient_id"] for r in read_rows(fault_cohort.manifest)
                        if r["split"] == split and r["patient_id"] in faulted}
        assert {s[0] for s in seq.skipped} == want_skipped
        n = len(seq)
        for i in range(n):  # shapes never change, no None batches
            x, y, w = seq[i]  # under skip, batches carry weights (0 for a patient that fails mid-epoch)
            assert x["ct"].shape[1:] == (16, 16, 16, 2) and len(y) == x["ct"].shape[0]
            assert w.dtype == np.float32 and np.all(w == 1.0)
        assert len(seq) == n


def test_zeros_policy_feeds_zeros_and_presence(fault_cohort, spec, fault_cache):
    faults = {f["patient_id"]: f for f in _faults(fault_cohort)}
    for split in ("train", "val"):
        seq = _seq(fault_cohort, spec, fault_cache, split=split, on_missing="zeros", on_corrupt="zeros",
                   shuffle=False)
        assert seq.optional_modalities == ["ct", "mr", "xray"]
        assert seq.input_names[-3:] == ["ct_present", "mr_present", "xray_present"]
        for pid in seq.patient_ids:
            x = seq.get_patient(pid)
            f = faults.get(pid)
            if f is not None and f["modality"] is not None:
                m = f["modality"]
                assert x[f"{m}_present"][0] == 0.0 and not x[m].any()
                if m == "ct":  # the reference is gone: the MR has no grid either
                    assert x["mr_present"][0] == 0.0
            else:
                assert all(x[f"{m}_present"][0] == 1.0 for m in ("ct", "mr", "xray"))
        # row-level problems cannot be zeroed: those patients are skipped
        row_level = {p for p, f in faults.items() if f["modality"] is None}
        assert not row_level & set(seq.patient_ids)
        xb = seq[0][0]
        assert xb["ct_present"].shape == (min(8, seq.num_patients), 1) and xb["ct_present"].dtype == np.float32


def test_optional_modality_present_input(clean_cohort, spec, warm_cache):
    from medmulti.spec import ModalitySpec, StudySpec

    mods = [ModalitySpec.from_dict({**m.to_dict(), "required": m.name != "xray"}) for m in spec.modalities]
    seq = _seq(clean_cohort, StudySpec(modalities=mods, labels=spec.labels), warm_cache, batch_size=2)
    assert seq.optional_modalities == ["xray"] and seq.input_names == ["ct", "mr", "xray", "xray_present"]
    x, _ = seq[0]
    np.testing.assert_array_equal(x["xray_present"], np.ones((2, 1), np.float32))


# ------------------------------------------------------------------ files changing, cache use
def _manifest(root: Path) -> Path:
    return root / "manifest.csv"


def test_cache_hits_need_no_preprocessing_and_a_touched_file_recomputes_only_its_entry(
        cohort_copy, spec, monkeypatch):
    import medmulti.study.preprocess as pp

    root, cache = cohort_copy
    calls = []
    real = pp.preprocess_study

    def counting(sources, spec_, *, patient_id=None, only=None):
        calls.append((patient_id, tuple(only or ())))
        return real(sources, spec_, patient_id=patient_id, only=only)

    monkeypatch.setattr(pp, "preprocess_study", counting)
    seq = PatientSequence(_manifest(root), spec, "train", cache_dir=cache, progress=False, batch_size=2)
    for i in range(len(seq)):
        seq[i]
    assert calls == []  # every entry was a hit
    n_entries = len(list(PreprocessCache(cache).keys()))
    pid = seq.patient_ids[0]
    mr = next(root.joinpath(pid).glob("mr*"))
    st = mr.stat()
    os.utime(mr, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    before = seq.get_patient(pid)
    assert calls == [(pid, ("mr",))]
    again = seq.get_patient(pid)
    assert calls == [(pid, ("mr",))]  # stored: a hit now
    np.testing.assert_array_equal(before["mr"], again["mr"])
    assert len(list(PreprocessCache(cache).keys())) == n_entries + 1  # the new MR entry, nothing else


def test_a_file_broken_after_construction_raises_typed_at_the_batch(cohort_copy, spec):
    root, cache = cohort_copy
    seq = PatientSequence(_manifest(root), spec, "train", cache_dir=cache, progress=False, batch_size=1,
                          shuffle=False)
    pid = seq.patient_ids[0]
    victim = sorted((root / pid / "ct").iterdir())[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated slice
    with pytest.raises(MedmultiError) as info:
        seq[0]
    assert info.value.patient_id == pid
    assert info.value.modality == "ct"
    assert info.value.path.startswith(f"{pid}/ct")  # relative to the manifest folder
    seq[1]  # the other patients still read


def test_corrupt_cache_entry_is_recomputed_with_a_warning(cohort_copy, spec, caplog):
    import logging

    root, cache = cohort_copy
    seq = PatientSequence(_manifest(root), spec, "train", cache_dir=cache, progress=False, batch_size=1,
                          shuffle=False)
    good = seq.get_patient(seq.patient_ids[0])
    for side in Path(cache).glob("??/*.json"):
        info = json.loads(side.read_text())
        if info["patient_id"] == seq.patient_ids[0] and info["modality"] == "ct":
            npy = side.parent / info["file"]
            b = bytearray(npy.read_bytes())
            b[-5] ^= 0x40
            npy.write_bytes(bytes(b))
    with caplog.at_level(logging.WARNING, logger="medmulti.data.cache"):
        again = seq.get_patient(seq.patient_ids[0])
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(good["ct"], again["ct"])


def test_without_cache_equals_with_cache(clean_cohort, spec, warm_cache):
    a = _seq(clean_cohort, spec, None, batch_size=2, shuffle=False)
    b = _seq(clean_cohort, spec, warm_cache, batch_size=2, shuffle=False)
    xa, ya = a[0]
    xb, yb = b[0]
    for n in xa:
        np.testing.assert_array_equal(xa[n], xb[n])


