"""One admission per patient, kept at every stage: construction, shape probe, fill_cache, inside model.fit.

Faults are real files damaged on disk (truncated DICOM slices) after admission judged them,
as when a shared disk changes under a running job; the oracle for "truncated" is pydicom
refusing the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from data_helpers import read_rows

from medmulti import errors
from medmulti.data import PatientSequence
from medmulti.manifest import admit, load_manifest


def _copy(cohort, tmp_path) -> Path:
    root = tmp_path / "cohort"
    shutil.copytree(cohort.root, root, ignore=shutil.ignore_patterns(".done"))
    return root


def _truncate_slice(root: Path, pid: str) -> Path:
    """Cut one CT slice of ``pid`` in half (pydicom then fails to read its pixels)."""
    f = sorted((root / pid / "ct").iterdir())[3]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception):
        _ = pydicom.dcmread(f).pixel_array  # the oracle: the file is damaged
    return f


def _train_ids(root: Path) -> list[str]:
    return [r["patient_id"] for r in read_rows(root / "manifest.csv") if r["split"] == "train"]


def test_parallel_admission_equals_serial(fault_cohort, spec):
    man = load_manifest(fault_cohort.manifest, spec, strict=False)
    serial = admit(man, spec, workers=1, on_missing="skip", on_corrupt="skip", progress=False)
    parallel = admit(man, spec, workers=2, on_missing="skip", on_corrupt="skip", progress=False)
    assert serial.verdicts == parallel.verdicts
    assert sorted(map(repr, serial.problems)) == sorted(map(repr, parallel.problems))


def test_a_file_damaged_after_admission_is_skipped_by_the_shape_probe(clean_cohort, spec, tmp_path):
    root = _copy(clean_cohort, tmp_path)
    man = load_manifest(root / "manifest.csv", spec, strict=False)
    adm = admit(man, spec, splits=["train"], on_missing="skip", on_corrupt="skip", progress=False)
    first = _train_ids(root)[0]
    _truncate_slice(root, first)  # the first patient is the one the probe reads
    seq = PatientSequence(man, spec, "train", on_missing="skip", on_corrupt="skip", admission=adm, progress=False,
                          cache_dir=tmp_path / "cache")
    assert first not in seq.patient_ids and len(seq.patient_ids) == len(_train_ids(root)) - 1
    assert [(k, m) for k, m, _ in seq.skipped] == [(first, "ct")]
    assert seq.skipped[0][2].startswith("corrupt_file:")
    # under "error" the same fault is the typed error, naming patient, modality and file
    with pytest.raises(errors.CorruptFileError) as info:
        PatientSequence(man, spec, "train", admission=admit(man, spec, splits=["train"], progress=False),
                        progress=False)
    assert info.value.patient_id == first and info.value.modality == "ct"


def test_fill_cache_removes_a_patient_that_fails_to_preprocess(clean_cohort, spec, tmp_path):
    root = _copy(clean_cohort, tmp_path)
    man = load_manifest(root / "manifest.csv", spec, strict=False)
    seq = PatientSequence(man, spec, "train", on_missing="skip", on_corrupt="skip", progress=False,
                          cache_dir=tmp_path / "cache", shuffle=False)
    victim = seq.patient_ids[-1]
    _truncate_slice(root, victim)
    n = seq.num_patients
    summary = seq.fill_cache(workers=1, progress=False)
    assert [f["patient_id"] for f in summary.failures] == [victim]
    assert summary.failures[0]["check"] == "corrupt_file"
    assert victim not in seq.patient_ids and seq.num_patients == n - 1
    assert victim in {k for k, _, _ in seq.skipped}
    for i in range(len(seq)):
        x, y, w = seq[i]
        assert np.all(w == 1.0)


def test_zeros_policy_zeroes_an_optional_input_that_fails_in_fill_cache(clean_cohort, spec, tmp_path):
    root = _copy(clean_cohort, tmp_path)
    man = load_manifest(root / "manifest.csv", spec, strict=False)
    seq = PatientSequence(man, spec, "train", on_missing="zeros", on_corrupt="zeros", progress=False,
                          cache_dir=tmp_path / "cache", shuffle=False)
    victim = seq.patient_ids[-1]
    (root / victim / "xray.dcm").write_bytes((root / victim / "xray.dcm").read_bytes()[:600])
    seq.fill_cache(workers=1, progress=False)
    assert victim in seq.patient_ids
    x = seq.get_patient(victim)
    assert x["xray_present"][0] == 0.0 and not x["xray"].any() and x["ct_present"][0] == 1.0
    assert (victim, "xray") in {(k, m) for k, m, _ in seq.zeroed}


def test_model_fit_survives_a_file_damaged_between_epochs(clean_cohort, spec, tmp_path):
    import keras

    from medmulti.models import build_fusion_model

    root = _copy(clean_cohort, tmp_path)
    man = load_manifest(root / "manifest.csv", spec, strict=False)
    seq = PatientSequence(man, spec, "train", batch_size=2, on_missing="skip", on_corrupt="skip", progress=False,
                          cache_dir=tmp_path / "cache", shuffle=False)
    victim = seq.patient_ids[-1]
    shapes = seq.element_shapes()
    model = build_fusion_model(spec, input_shapes={n: shapes[n] for n in spec.names}, seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")

    class Damage(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                _truncate_slice(root, victim)  # the cache key follows the file: it is read again

    seen = []

    class Weights(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(logs["loss"]))

    history = model.fit(seq, epochs=3, verbose=0, callbacks=[Damage(), Weights()])
    assert np.all(np.isfinite(history.history["loss"])) and len(history.history["loss"]) == 3
    assert seq.faulted == [victim]
    assert [(k, m) for k, m, _ in seq.skipped] == [(victim, "ct")]
    # the patient's batch now weighs it 0 without reading its files again
    last = (seq.num_patients - 1) // 2
    x, y, w = seq.batch(seq.epoch, last)
    row = seq.patient_ids[last * 2:].index(victim)
    assert w[row] == 0.0 and not x["ct"][row].any()


def test_train_admits_its_splits_once(clean_cohort, spec_path, tmp_path, monkeypatch):
    import medmulti.data.sequence as sequence_module
    import medmulti.training.batches as batches
    from medmulti.training import train

    calls = []

    def counting(real):
        def admit_and_count(*args, **kwargs):
            calls.append(sorted(kwargs.get("splits") or []))
            return real(*args, **kwargs)
        return admit_and_count

    monkeypatch.setattr(batches, "admit", counting(batches.admit))
    monkeypatch.setattr(sequence_module, "admit", counting(sequence_module.admit))
    train(clean_cohort.manifest, spec_path, tmp_path / "run", epochs=1, batch_size=4, progress=False,
          cache_dir=tmp_path / "cache")
    splits = sorted({r["split"] for r in read_rows(clean_cohort.manifest)})
    assert calls == [splits]  # one admission (one pool) for every split; no sequence admits again


def test_zeros_policy_inside_an_epoch_reads_the_patient_again_without_the_broken_input(clean_cohort, spec, tmp_path):
    root = _copy(clean_cohort, tmp_path)
    man = load_manifest(root / "manifest.csv", spec, strict=False)
    seq = PatientSequence(man, spec, "train", batch_size=8, on_missing="zeros", on_corrupt="zeros", progress=False,
                          cache_dir=tmp_path / "cache", shuffle=False)
    victim = seq.patient_ids[-1]
    before = seq.get_patient(victim)
    xray = root / victim / "xray.dcm"
    xray.write_bytes(xray.read_bytes()[:600])  # the X-ray (not required under zeros) breaks mid-run
    x, y, w = seq[0]
    j = seq.patient_ids.index(victim)
    assert w[j] == 1.0 and x["xray_present"][j, 0] == 0.0 and not x["xray"][j].any()
    np.testing.assert_array_equal(x["ct"][j], before["ct"])  # the rest of the patient is served as before
    assert seq.faulted == [] and (victim, "xray") in {(k, m) for k, m, _ in seq.zeroed}
