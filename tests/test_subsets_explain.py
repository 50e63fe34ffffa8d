"""Missing-modality subsets (evaluate_subsets) and explanations (Grad-CAM, fusion weights).

The run folders come from a tiny generated cohort trained for one epoch on tiny CNNs:
the subset scores are held to the model fed the masked batches by hand (scikit-learn's
ROC AUC as the oracle), not to numbers typed here. Grad-CAM is held to a model trained on
synthetic images whose finding sits in one known quadrant (2D) / octant (3D).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import medmulti as mm
from medmulti.data.sequence import PatientSequence
from medmulti.models import build_fusion_model
from medmulti.spec import StudySpec
from medmulti.training import train
from medmulti.training.explain import fusion_weights, gate_shares, grad_cam
from medmulti.training.subsets import mask_modalities, modality_subsets, subset_name

TINY = dict(epochs=1, batch_size=4, width=2, depth=2, embed_dim=4, stem_stride=2, progress=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medmulti.data.cache_fill import preprocess_manifest
    from medmulti.examples.cohort import make_sample_cohort

    root = tmp_path_factory.mktemp("subsets_cohort")
    c = make_sample_cohort(root / "cohort", n_patients=12, seed=3, faults=False, progress=False)
    cache = root / "cache"
    assert preprocess_manifest(c.manifest, c.spec, cache, workers=1, progress=False).ok
    return c, cache


@pytest.fixture(scope="module")
def presence_run(cohort, tmp_path_factory):
    """Attention fusion with a presence input per modality (on_missing="zeros" makes them optional)."""
    c, cache = cohort
    out = tmp_path_factory.mktemp("runs") / "attention"
    return train(c.manifest, c.spec, out, seed=1, fusion="attention", cache_dir=cache, on_missing="zeros",
                 **TINY).run_dir


@pytest.fixture(scope="module")
def zeros_run(cohort, tmp_path_factory):
    """Concat fusion, every modality required: no presence inputs."""
    c, cache = cohort
    out = tmp_path_factory.mktemp("runs") / "concat"
    return train(c.manifest, c.spec, out, seed=1, fusion="concat", cache_dir=cache, **TINY).run_dir


def _by_hand(run_dir, cohort, split, on_missing):
    """Every subset scored by feeding the model masked batches built here."""
    from sklearn.metrics import roc_auc_score

    c, cache = cohort
    card = json.loads((run_dir / "run_card.json").read_text())
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    seq = PatientSequence(c.manifest, c.spec, split, batch_size=5, shuffle=False, on_missing=on_missing,
                          cache_dir=cache, progress=False)
    batches = [seq[i] for i in range(len(seq))]
    labels = np.concatenate([b[1] for b in batches])
    labels = labels.argmax(axis=1) if labels.ndim == 2 else labels  # one-hot -> class index
    names = card["modalities"]
    out = {}
    for k in range(len(names), 0, -1):
        for subset in itertools.combinations(names, k):
            probs = []
            for inputs, *_ in batches:  # (inputs, labels, weights) under the zeros policy
                fed = {}
                for key in card["input_keys"]:
                    value = np.array(inputs[key], copy=True)
                    modality = key[:-len("_present")] if key.endswith("_present") else key
                    if modality not in subset:
                        value[...] = 0.0
                    fed[key] = value
                probs.append(np.asarray(model(fed, training=False)))
            p = np.concatenate(probs)
            out["+".join(subset)] = {"auc": roc_auc_score(labels, p[:, 1]) if len(set(labels)) == 2 else None,
                                     "accuracy": float((p.argmax(1) == labels).mean()), "n": len(labels)}
    return out


@pytest.mark.parametrize("which, masking", [("presence_run", "presence"), ("zeros_run", "zeros")])
def test_subset_scores_equal_the_model_fed_masked_batches_by_hand(request, cohort, which, masking):
    run_dir = request.getfixturevalue(which)
    result = mm.evaluate_subsets(run_dir, split="train", progress=False)
    assert result["masking"] == masking
    assert result["modalities"] == ["ct", "mr", "xray"]
    assert list(result["subsets"]) == ["ct+mr+xray", "ct+mr", "ct+xray", "mr+xray", "ct", "mr", "xray"]
    expected = _by_hand(run_dir, cohort, "train", "zeros" if masking == "presence" else "error")
    assert expected["ct+mr+xray"]["auc"] is not None  # both classes: the AUCs are compared, not just None
    for name, want in expected.items():
        got = result["subsets"][name]
        assert got["n"] == want["n"]
        assert got["accuracy"] == pytest.approx(want["accuracy"])
        assert (got["auc"] is None) == (want["auc"] is None)
        if want["auc"] is not None:
            assert got["auc"] == pytest.approx(want["auc"], abs=1e-9)
    on_disk = json.loads((run_dir / "subsets_train.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert (run_dir / "subsets_train.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = mm.evaluate(run_dir, split="train", write=False, progress=False)
    assert result["subsets"]["ct+mr+xray"]["auc"] == pytest.approx(full["auc"])
    if masking == "zeros":
        assert "no presence inputs" in result["note"]


def test_masking_helpers():
    assert modality_subsets(["a", "b"]) == [("a", "b"), ("a",), ("b",)]
    assert len(modality_subsets(["t1", "t1ce", "t2", "flair"])) == 15  # BraTS' subsets
    assert subset_name(("a", "b")) == "a+b"
    batch = {"a": np.ones((2, 4, 4, 1), np.float32), "a_present": np.ones((2, 1), np.float32),
             "b": np.full((2, 3, 1), 2.0, np.float32)}
    masked = mask_modalities(batch, ["a", "b"])
    assert not masked["a"].any() and not masked["a_present"].any() and not masked["b"].any()
    assert batch["a"].all()  # the input batch is left alone


# -- Grad-CAM -----------------------------------------------------------------------------
CT_GRID, XR_GRID = (12, 12, 12), (16, 16)


def _blob(shape, centre, radius):
    grid = np.indices(shape).astype(np.float32)
    d2 = sum((grid[i] - centre[i]) ** 2 for i in range(len(shape)))
    return np.exp(-d2 / (2 * radius**2))


def _findings_cohort(n, rng):
    """CT finding in the octant z < 6, y < 6, x >= 6; X-ray finding in the quadrant rows < 8, cols < 8.

    Each finding is present with probability 1/2; the label is 1 when either is.
    """
    ct = rng.normal(0.0, 0.3, (n, *CT_GRID, 1)).astype(np.float32)
    xray = rng.normal(0.0, 0.3, (n, *XR_GRID, 1)).astype(np.float32)
    found = rng.integers(0, 2, (n, 2))
    for i in range(n):
        if found[i, 0]:
            ct[i, ..., 0] += 3 * _blob(CT_GRID, rng.uniform([1.5, 1.5, 7.5], [4.5, 4.5, 10.5]), 1.2)
        if found[i, 1]:
            xray[i, ..., 0] += 3 * _blob(XR_GRID, rng.uniform([2, 2], [6, 6]), 1.5)
    return {"ct": ct, "xray": xray}, found.max(axis=1), found


SYNTH_SPEC = {"labels": {"column": "dx", "classes": ["no", "yes"]},
              "modalities": [{"name": "ct", "kind": "ct", "shape": list(CT_GRID), "reference": True},
                             {"name": "xray", "kind": "xray", "shape": list(XR_GRID)}]}


def test_grad_cam_peaks_where_the_finding_is_in_each_modality():
    keras.utils.set_random_seed(0)
    model = build_fusion_model(StudySpec.from_dict(SYNTH_SPEC), width=4, depth=2, embed_dim=8, norm="none",
                               pooling="max", fusion="concat", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x, y, _ = _findings_cohort(96, np.random.default_rng(0))
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    xt, yt, found = _findings_cohort(40, np.random.default_rng(1))
    assert (model.predict(xt, verbose=0).argmax(1) == yt).mean() >= 0.9  # it learned the findings
    both = np.flatnonzero(found.all(axis=1))
    assert len(both) >= 5
    heat, probs = grad_cam(model, {k: v[both] for k, v in xt.items()}, class_index=1)
    np.testing.assert_allclose(probs, model.predict({k: v[both] for k, v in xt.items()}, verbose=0), atol=1e-5)
    assert heat["ct"].shape == (len(both), *CT_GRID) and heat["xray"].shape == (len(both), *XR_GRID)
    for j in range(len(both)):
        z, r, c = np.unravel_index(heat["ct"][j].argmax(), CT_GRID)
        assert z < 6 and r < 6 and c >= 6, (j, (z, r, c))
        r, c = np.unravel_index(heat["xray"][j].argmax(), XR_GRID)
        assert r < 8 and c < 8, (j, (r, c))
        assert heat["ct"][j].max() == pytest.approx(1.0) and heat["xray"][j].min() >= 0.0


@pytest.mark.parametrize("fusion", ["attention", "gated", "concat"])
def test_fusion_weights_sum_to_one_over_present_modalities(fusion):
    spec = StudySpec.from_dict({**SYNTH_SPEC, "modalities": [{**m, "required": False}
                                                             for m in SYNTH_SPEC["modalities"]]})
    model = build_fusion_model(spec, width=2, depth=2, embed_dim=4, fusion=fusion, seed=0)
    x, _, _ = _findings_cohort(3, np.random.default_rng(2))
    x["ct_present"] = np.array([[1.0], [0.0], [1.0]], np.float32)
    x["xray_present"] = np.ones((3, 1), np.float32)
    found = fusion_weights(model, x)
    assert found["method"] == fusion and found["modalities"] == ["ct", "xray"]
    if fusion == "concat":
        assert found["weights"] is None
        return
    w = found["weights"]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert w[1, 0] == 0.0 and w[1, 1] == pytest.approx(1.0)
    if fusion == "gated":  # the shares reproduce the layer's own output
        layer = model.get_layer("fusion")
        stack, mask = keras.Model(model.input, layer.input)(x)
        fused = np.asarray(layer([stack, mask]))
        shares = gate_shares(layer, stack, mask)
        np.testing.assert_allclose((shares * np.asarray(stack)).sum(axis=1), fused, atol=1e-5)


# -- the run folder and the command --------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medmulti.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_explain_command_writes_heat_maps_and_fusion_weights(presence_run, cohort, tmp_path):
    c, _ = cohort
    patient = c.patient_ids[0]
    out = tmp_path / "explain"
    done = _cli("explain", presence_run, "--patient", patient, "--out", out)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "explain.json").read_text())
    assert doc["patient_id"] == patient
    assert set(doc["modalities"]) == {"ct", "mr", "xray"}
    for name, entry in doc["modalities"].items():
        assert (out / entry["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert entry["present"] is True and entry["layer"] == f"{name}_relu2"
        assert entry["grid"] == ([64, 64] if name == "xray" else [32, 32, 32])
        assert entry["peak_index"] is None or all(0 <= i < s for i, s in zip(entry["peak_index"], entry["grid"]))
    assert doc["fusion"]["method"] == "attention"
    assert sum(doc["fusion"]["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(doc["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "attention weight" in done.stdout


def test_explain_names_an_unknown_patient_with_a_typed_error(presence_run, tmp_path):
    done = _cli("explain", presence_run, "--patient", "NOBODY\x1b[2J", "--out", tmp_path / "x")
    assert done.returncode == 1
    assert "ManifestError" in done.stderr and "NOBODY" in done.stderr and "\x1b" not in done.stderr
    assert not (tmp_path / "x").exists()
    with pytest.raises(mm.ManifestError) as err:
        mm.explain(presence_run, "NOBODY", out=tmp_path / "y")
    assert err.value.patient_id == "NOBODY"


def test_a_run_trained_under_zeros_predicts_under_error(presence_run, cohort, tmp_path):
    """The run's presence inputs are filled (all present) when predict's policies serve none of them."""
    import csv

    from medmulti.training import predict

    c, cache = cohort
    ours = predict(presence_run, c.manifest, out=tmp_path / "error.csv", splits=["test"], cache_dir=cache,
                   on_missing="error", on_corrupt="error", progress=False)
    zeros = predict(presence_run, c.manifest, out=tmp_path / "zeros.csv", splits=["test"], cache_dir=cache,
                    on_missing="zeros", on_corrupt="zeros", progress=False)
    read = [list(csv.DictReader(p.open())) for p in (ours, zeros)]
    assert read[0] == read[1] and read[0]  # a clean split: every patient present either way
