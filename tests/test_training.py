"""train / evaluate / predict and their commands on a tiny generated cohort (one epoch each).

The cohort (real DICOM series, NIfTI and X-ray files from medmulti.examples.cohort) is made
and preprocessed into a cache once per module; every training run is one epoch on tiny
CNNs, so the whole module takes seconds of compute. Learning itself is measured by
benchmarks/demo_learning.py, not here.
"""

from __future__ import annotations

import csv
import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from medmulti import cli
from medmulti.errors import RunFolderError, SpecError
from medmulti.training import evaluate, predict, train

TINY = dict(epochs=1, batch_size=4, width=2, depth=2, embed_dim=4, stem_stride=2, progress=False)


def _rows(manifest):
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path_factory.mktemp("tiny_cohort")
    c = make_sample_cohort(root / "cohort", n_patients=12, seed=3, faults=False, progress=False)
    cache = root / "cache"
    summary = preprocess_manifest(c.manifest, c.spec, cache, workers=1, progress=False)
    assert summary.ok
    return c, cache


@pytest.fixture(scope="module")
def fusion_run(cohort, tmp_path_factory):
    c, cache = cohort
    out = tmp_path_factory.mktemp("runs") / "fusion"
    result = train(c.manifest, c.spec, out, seed=1, fusion="attention", cache_dir=cache, **TINY)
    return c, cache, result


def test_train_writes_a_complete_run_folder(fusion_run):
    c, _, result = fusion_run
    run = result.run_dir
    for name in ("model.keras", "metrics.json", "history.csv", "curves.png", "confusion_roc.png", "run_card.json",
                 "predictions_test.csv"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = _rows(c.manifest)
    per_split = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}

    card = json.loads((run / "run_card.json").read_text())
    assert card["manifest"]["sha256"] == hashlib.sha256(c.manifest.read_bytes()).hexdigest()
    assert card["versions"]["tensorflow"] == tf.__version__ and card["versions"]["keras"] == keras.__version__
    assert card["seed"] == 1 and card["modalities"] == ["ct", "mr", "xray"]
    assert {s: v["patients"] for s, v in card["counts"].items()} == per_split
    assert card["counts"]["test"]["classes"] == {
        k: sum(r["split"] == "test" and r["diagnosis"] == k for r in rows) for k in ("healthy", "disease")
    }
    assert card["spec"]["modalities"][0]["name"] == "ct"
    text = (run / "run_card.json").read_text()
    assert "SYNTHETIC" not in text and "19700101" not in text  # no header identity reaches the card

    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert metrics["n"] == per_split["test"]
    assert np.sum(metrics["confusion_matrix"]["matrix"]) == per_split["test"]
    assert set(metrics["auc_per_class"]) == {"healthy", "disease"}
    with open(run / "history.csv") as fh:
        history = list(csv.DictReader(fh))
    assert len(history) == 1 and {"loss", "val_loss", "accuracy"} <= set(history[0])


def test_saved_model_loads_safely_and_reproduces_the_test_predictions(fusion_run):
    from medmulti.data.sequence import PatientSequence

    c, cache, result = fusion_run
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    seq = PatientSequence(c.manifest, c.spec, "test", batch_size=4, cache_dir=cache, progress=False)
    ids, probs = [], []
    for i in range(len(seq)):
        x, _ = seq[i]
        probs.append(model.predict(x, verbose=0))
    ids = seq.patient_ids
    with open(result.run_dir / "predictions_test.csv") as fh:
        written = list(csv.DictReader(fh))
    assert [r["patient_id"] for r in written] == ids
    np.testing.assert_allclose([[float(r["p_healthy"]), float(r["p_disease"])] for r in written],
                               np.concatenate(probs), atol=1e-5)


def test_evaluate_and_predict_on_the_run(fusion_run, tmp_path):
    c, cache, result = fusion_run
    again = evaluate(result.run_dir, progress=False)
    assert again["confusion_matrix"] == result.metrics["confusion_matrix"]
    assert again["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert (result.run_dir / "evaluation_test.json").is_file()
    path = predict(result.run_dir, c.manifest, out=tmp_path / "p.csv", progress=False)
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["patient_id"] for r in rows) == sorted(r["patient_id"] for r in _rows(c.manifest))
    assert list(rows[0]) == ["patient_id", "p_healthy", "p_disease"]
    sums = [float(r["p_healthy"]) + float(r["p_disease"]) for r in rows]
    np.testing.assert_allclose(sums, 1.0, atol=2e-6)


def test_single_modality_training_is_deterministic_for_a_seed(cohort, tmp_path):
    c, cache = cohort
    a = train(c.manifest, c.spec, tmp_path / "a", modalities=["xray"], seed=5, cache_dir=cache, **TINY)
    b = train(c.manifest, c.spec, tmp_path / "b", modalities=["xray"], seed=5, cache_dir=cache, **TINY)
    model = keras.saving.load_model(a.model_path, safe_mode=True)
    assert sorted(model.input) == ["xray"]
    assert a.history == b.history
    assert (tmp_path / "a" / "predictions_test.csv").read_text() == (tmp_path / "b" / "predictions_test.csv").read_text()


def _served_train_epochs(monkeypatch):
    """Record the epoch of every training batch the sequence serves."""
    from medmulti.data.sequence import PatientSequence

    served = []
    original = PatientSequence.batch

    def batch(self, epoch, index):
        if self.split == "train":
            served.append((int(epoch), int(index)))
        return original(self, epoch, index)

    monkeypatch.setattr(PatientSequence, "batch", batch)
    return served


def test_fit_stopped_mid_run_trains_as_a_shorter_run(cohort, tmp_path, monkeypatch):
    """One tf.data pass serves every epoch (epoch k reads the sequence's epoch k + 1); a fit that
    stops early leaves the rest unread and trains exactly as a run of that many epochs."""
    from medmulti.training import fit as fit_module

    c, cache = cohort
    options = dict(TINY, modalities=["xray"], seed=2, cache_dir=cache)
    served = _served_train_epochs(monkeypatch)
    short = train(c.manifest, c.spec, tmp_path / "short", **{**options, "epochs": 2})
    n = max(i for _, i in served) + 1
    assert sorted(served) == [(e, i) for e in (1, 2) for i in range(n)]  # each batch once, nothing more

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    monkeypatch.setattr(fit_module, "_lr_callback", lambda *args, **kwargs: StopAfterTwo())
    served.clear()
    stopped = train(c.manifest, c.spec, tmp_path / "stopped", **{**options, "epochs": 5})
    assert {(e, i) for e, i in served if e <= 2} == {(e, i) for e in (1, 2) for i in range(n)}
    assert stopped.history == short.history and stopped.metrics == short.metrics


def _fail_in_training(monkeypatch):
    """Make the first training patient tf.data reads fail from then on (its CT: a CorruptFileError)."""
    import threading

    from medmulti.data.sequence import PatientSequence
    from medmulti.errors import CorruptFileError

    original = PatientSequence._load_patient
    victim: list[str] = []

    def load(self, i, names, out):
        key = self._rows[i].key
        if self.split == "train" and threading.current_thread() is not threading.main_thread():  # tf.data's
            victim[:] = victim or [key]
            if key == victim[0] and "ct" in names:
                raise CorruptFileError("the slice is truncated", patient_id=key, modality="ct",
                                       path=self._rows[i].paths.get("ct"))
        return original(self, i, names, out)

    monkeypatch.setattr(PatientSequence, "_load_patient", load)
    return victim


def test_a_file_failing_inside_training_is_its_typed_error(cohort, tmp_path, monkeypatch):
    from medmulti.errors import CorruptFileError

    c, cache = cohort
    victim = _fail_in_training(monkeypatch)
    with pytest.raises(CorruptFileError) as info:  # not TensorFlow's UnknownError
        train(c.manifest, c.spec, tmp_path / "run", seed=1, cache_dir=cache, **TINY)
    assert info.value.patient_id == victim[0] and info.value.modality == "ct" and info.value.path
    assert not (tmp_path / "run").exists()  # before the first epoch ended: nothing is left


def test_a_file_failing_inside_training_is_left_out_under_skip(cohort, tmp_path, monkeypatch):
    c, cache = cohort
    victim = _fail_in_training(monkeypatch)
    result = train(c.manifest, c.spec, tmp_path / "run", seed=1, cache_dir=cache, on_corrupt="skip",
                   **{**TINY, "epochs": 2})
    assert len(result.history["loss"]) == 2 and all(np.isfinite(result.history["loss"]))
    skipped = result.excluded["train"]["skipped"]
    assert [(s["patient_id"], s["modality"]) for s in skipped] == [(victim[0], "ct")]
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert card["excluded"]["train"]["skipped"] == skipped


def test_cli_train_evaluate_predict(cohort, tmp_path, capsys):
    c, cache = cohort
    out = tmp_path / "run"
    code = cli.main(["train", str(c.manifest), "--spec", str(c.spec), "--out", str(out), "--cache", str(cache),
                     "--modalities", "ct", "--epochs", "1", "--width", "2", "--depth", "2", "--no-progress"])
    assert code == 0
    assert "test ROC AUC" in capsys.readouterr().out
    assert json.loads((out / "run_card.json").read_text())["modalities"] == ["ct"]
    assert cli.main(["evaluate", str(out), "--split", "val", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == sum(r["split"] == "val" for r in _rows(c.manifest))
    assert cli.main(["predict", str(out), str(c.manifest), "--split", "test", "--out", str(tmp_path / "p.csv"),
                     "--no-progress"]) == 0
    assert (tmp_path / "p.csv").is_file()
    # usage errors: non-empty run folder, bad epochs
    assert cli.main(["train", str(c.manifest), "--spec", str(c.spec), "--out", str(out)]) == 2
    assert cli.main(["train", str(c.manifest), "--spec", str(c.spec), "--out", str(out), "--epochs", "0"]) == 2


def test_training_errors_are_typed(cohort, tmp_path):
    c, cache = cohort
    with pytest.raises(SpecError, match="not in the spec"):
        train(c.manifest, c.spec, tmp_path / "x", modalities=["pet"], cache_dir=cache, **TINY)
    with pytest.raises(RunFolderError, match="not a medmulti run folder"):
        evaluate(tmp_path)


def test_command_choices_match_the_models():
    from medmulti.cli import train as train_command
    from medmulti.models import BACKBONES, FUSIONS

    assert tuple(train_command.FUSION_CHOICES) == tuple(FUSIONS)
    assert tuple(train_command.BACKBONE_CHOICES) == tuple(sorted(BACKBONES))
