"""Metrics against independent oracles: brute-force pair counts and keras.metrics.AUC."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from medmulti.models.metrics import classification_metrics, confusion_matrix, roc_auc, roc_curve


def _pairs_auc(y, s):
    pos = [v for v, t in zip(s, y) if t]
    neg = [v for v, t in zip(s, y) if not t]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_the_pairwise_definition_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60) + 0.3 * y, 1)  # rounding makes ties
    assert roc_auc(y, s) == pytest.approx(_pairs_auc(y, s), abs=1e-12)


def test_roc_auc_agrees_with_keras_auc_and_trapezoid_of_roc_curve():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    s = rng.random(500) + 0.5 * y
    s = s / s.max()
    metric = keras.metrics.AUC(num_thresholds=5000)
    metric.update_state(y, s)
    assert roc_auc(y, s) == pytest.approx(float(metric.result()), abs=2e-3)
    fpr, tpr = roc_curve(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)


def test_roc_auc_edge_cases():
    assert roc_auc([1, 1, 1], [0.2, 0.3, 0.4]) is None
    assert roc_auc([0, 1], [0.1, 0.9]) == 1.0
    assert roc_auc([0, 1], [0.9, 0.1]) == 0.0
    with pytest.raises(ValueError, match="length"):
        roc_auc([0, 1, 1], [0.1, 0.9])


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_classification_metrics_single_label_onehot_and_int_agree():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    onehot = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], np.float32)
    a = classification_metrics(onehot, probs, ["healthy", "disease"])
    b = classification_metrics(np.array([0, 1, 1, 1]), probs, ["healthy", "disease"])
    assert a == b
    assert a["accuracy"] == 0.75
    assert a["auc"] == a["auc_per_class"]["disease"] == a["auc_per_class"]["healthy"] == 1.0
    assert a["confusion_matrix"]["matrix"] == [[1, 0], [1, 2]]
    assert a["class_counts"] == {"healthy": 1, "disease": 3}


def test_classification_metrics_multi_label():
    probs = np.array([[0.9, 0.2], [0.1, 0.7], [0.8, 0.6]])
    y = np.array([[1, 0], [0, 1], [0, 1]])
    m = classification_metrics(y, probs, ["a", "b"], multi_label=True)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["exact_match"] == pytest.approx(2 / 3)
    assert m["auc_per_class"]["a"] == 1.0 and m["auc_per_class"]["b"] == 1.0
    assert m["confusion_matrix"]["a"] == [[1, 1], [0, 1]]
