"""Cross-validation (``cv=K``), resuming a killed run, and the learning-rate schedules.

One tiny generated cohort (12 patients), preprocessed once; every run is 1-4 epochs of
tiny CNNs. The kill is a real SIGKILL of a `medmulti train` subprocess once its backup
holds a completed epoch; `--resume` must then end with the weights and history of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from medmulti import cli
from medmulti.training import CVResult, train
from medmulti.training.fit import BACKUP_DIR, CV_SUMMARY, backup_epoch

TINY = dict(batch_size=4, width=2, depth=2, embed_dim=4, stem_stride=2, progress=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path_factory.mktemp("cv_cohort")
    c = make_sample_cohort(root / "cohort", n_patients=12, seed=3, faults=False, progress=False)
    assert preprocess_manifest(c.manifest, c.spec, root / "cache", workers=1, progress=False).ok
    return c, root / "cache"


def _history(run):
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_cv_writes_a_folder_per_fold_and_a_summary_with_numpy_mean_and_std(cohort, tmp_path):
    c, cache = cohort
    result = train(c.manifest, c.spec, tmp_path / "cv", cv=2, epochs=1, seed=1, cache_dir=cache, **TINY)
    assert isinstance(result, CVResult) and len(result.folds) == 2
    summary = json.loads((tmp_path / "cv" / CV_SUMMARY).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    for k in range(2):
        card = json.loads((tmp_path / "cv" / f"fold-{k}" / "run_card.json").read_text())
        assert card["status"] == "complete" and card["cv"]["fold"] == k
        assert not (tmp_path / "cv" / f"fold-{k}" / BACKUP_DIR).exists()
    # the held-out folds partition the non-test patients, by patient
    test_ids = {r["patient_id"] for r in csv.DictReader(line for line in open(c.manifest) if line[0] != "#")
                if r["split"] == "test"}
    assigned = summary["assignment"]
    assert set(assigned) & test_ids == set() and sorted(set(assigned.values())) == [0, 1]
    for k, fold in enumerate(summary["folds"]):
        assert fold["patients"]["val"] == sum(v == k for v in assigned.values())
    for split in ("val", "test"):
        for name in ("accuracy", "auc"):
            values = [f[split][name] for f in summary["folds"]]
            assert summary["mean"][split][name] == pytest.approx(np.mean(values))
            assert summary["std"][split][name] == pytest.approx(np.std(values, ddof=1))


def test_cv_uses_the_manifests_fold_column(cohort, tmp_path):
    from medmulti.manifest import split_manifest

    c, cache = cohort
    folded = split_manifest(c.manifest, c.manifest.parent / "folded.csv", folds=2, stratify="diagnosis", seed=7).path
    result = train(folded, c.spec, tmp_path / "cv", cv=2, epochs=1, seed=1, cache_dir=cache, **TINY)
    rows = [r for r in csv.DictReader(line for line in open(folded) if line[0] != "#") if r["fold"]]
    assert result.summary["fold_source"] == "manifest"
    assert result.summary["assignment"] == {r["patient_id"]: int(r["fold"]) for r in rows}
    with pytest.raises(Exception, match="fold 2 has no rows"):
        train(folded, c.spec, tmp_path / "cv3", cv=3, epochs=1, cache_dir=cache, **TINY)


def _train_command(c, cache, out, *extra):
    return [sys.executable, "-m", "medmulti", "train", str(c.manifest), "--spec", str(c.spec), "--out", str(out),
            "--cache", str(cache), "--epochs", "4", "--width", "2", "--depth", "2", "--batch-size", "4", "--seed",
            "1", "--no-progress", *extra]


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(cohort, tmp_path):
    c, cache = cohort
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(_train_command(c, cache, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while backup_epoch(killed) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    done = backup_epoch(killed)
    assert done is not None and 1 <= done < 4, "the run was not killed between its first and its last epoch"
    assert not (killed / "run_card.json").exists()

    # without --resume the folder is refused; with it, training continues after epoch `done`
    assert cli.main(_train_command(c, cache, killed)[3:]) == 2
    assert cli.main(_train_command(c, cache, killed, "--resume")[3:]) == 0
    assert cli.main(_train_command(c, cache, full)[3:]) == 0

    card = json.loads((killed / "run_card.json").read_text())
    assert card["status"] == "complete" and card["resumed_after_epoch"] == done
    assert not (killed / BACKUP_DIR).exists() and not (full / BACKUP_DIR).exists()
    a, b = _history(full), _history(killed)
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    for ra, rb in zip(a, b):
        for key in ra:
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6), (ra["epoch"], key)
    wa = keras.saving.load_model(full / "model.keras", safe_mode=True).get_weights()
    wb = keras.saving.load_model(killed / "model.keras", safe_mode=True).get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # a complete run has nothing to resume
    assert cli.main(_train_command(c, cache, killed, "--resume")[3:]) == 2


def test_a_failure_after_an_epoch_keeps_the_backup_and_resume_checks_the_options(cohort, tmp_path, monkeypatch):
    from medmulti.training import fit as fit_module

    c, cache = cohort
    out = tmp_path / "run"
    original = fit_module._Backup

    class StopAfterFirstEpoch:  # the real backup, then an interruption at the end of epoch 1
        def __new__(cls, run_dir):
            backup = original(run_dir)
            save = backup.on_epoch_end

            def on_epoch_end(epoch, logs=None):
                save(epoch, logs)
                raise KeyboardInterrupt

            backup.on_epoch_end = on_epoch_end
            return backup

    monkeypatch.setattr(fit_module, "_Backup", StopAfterFirstEpoch)
    with pytest.raises(KeyboardInterrupt):
        train(c.manifest, c.spec, out, epochs=3, seed=1, cache_dir=cache, **TINY)
    card = json.loads((out / "run_card.json").read_text())
    assert card["status"] == "failed" and card["resumable"] is True and backup_epoch(out) == 1
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not empty.*resume=True"):
        train(c.manifest, c.spec, out, epochs=3, seed=1, cache_dir=cache, **TINY)
    with pytest.raises(ValueError, match="these differ: fit.learning_rate"):
        train(c.manifest, c.spec, out, epochs=3, seed=1, learning_rate=0.1, cache_dir=cache, resume=True, **TINY)
    result = train(c.manifest, c.spec, out, epochs=3, seed=1, cache_dir=cache, resume=True, **TINY)
    assert len(result.history["loss"]) == 3 and backup_epoch(out) is None
    assert json.loads((out / "run_card.json").read_text())["status"] == "complete"


def test_a_failure_before_the_first_epoch_leaves_nothing_to_resume(cohort, tmp_path):
    c, cache = cohort
    with pytest.raises(Exception):
        train(c.manifest, c.spec, tmp_path / "run", epochs=1, modalities=["pet"], cache_dir=cache, **TINY)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="nothing to resume"):
        train(c.manifest, c.spec, tmp_path / "run", epochs=1, cache_dir=cache, resume=True, **TINY)
    with pytest.raises(ValueError, match="choose one"):
        train(c.manifest, c.spec, tmp_path / "run", resume=True, overwrite=True, **TINY)


def test_cosine_schedule_sets_the_learning_rate_of_every_epoch(cohort, tmp_path):
    c, cache = cohort
    result = train(c.manifest, c.spec, tmp_path / "run", epochs=3, seed=1, learning_rate=0.01, lr_schedule="cosine",
                   cache_dir=cache, modalities=["xray"], **TINY)
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-6)
    np.testing.assert_allclose([float(r["learning_rate"]) for r in _history(tmp_path / "run")], expected, rtol=1e-6)


def test_tensorboard_needs_its_package(cohort, tmp_path):
    import importlib.util

    c, cache = cohort
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            train(c.manifest, c.spec, tmp_path / "run", epochs=1, tensorboard=True, cache_dir=cache, **TINY)
        return
    train(c.manifest, c.spec, tmp_path / "run", epochs=1, tensorboard=True, cache_dir=cache, modalities=["xray"],
          **TINY)
    assert any((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_command_schedules_match_the_options():
    from medmulti.cli import train as train_command
    from medmulti.training import LR_SCHEDULES

    assert tuple(train_command.LR_SCHEDULES) == tuple(LR_SCHEDULES)
