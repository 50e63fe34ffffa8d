"""Evaluation metrics against independent oracles: scikit-learn (AUC, Brier, calibration
curve, confusion counts, ROC thresholds) and scipy.stats.bootstrap (percentile intervals
on the same resampled patients), plus temperature scaling checked by its defining
properties (lower NLL on a miscalibrated set, argmax unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import bootstrap

from medmulti.models.calibration import (
    TemperatureScaling,
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from medmulti.models.metrics import (
    bootstrap_indices,
    bootstrap_intervals,
    brier_score,
    calibration_bins,
    calibration_metrics,
    choose_threshold,
    classification_metrics,
    expected_calibration_error,
    roc_auc,
    threshold_metrics,
)

skm = pytest.importorskip("sklearn.metrics")
skc = pytest.importorskip("sklearn.calibration")


def _binary(seed: int, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # rounding makes ties
    return y, s


def _three_class(seed: int, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def _multi_label(seed: int, n: int = 70) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 3))
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, (n, 3)) + 1.2 * (2 * y - 1))))
    return y, p


@pytest.mark.parametrize("seed", range(3))
def test_binary_auc_brier_and_confusion_equal_sklearn(seed):
    y, s = _binary(seed)
    p = np.c_[1 - s, s]
    m = classification_metrics(y, p, ["healthy", "disease"])
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, s), abs=1e-12)
    cm = threshold_metrics(y, s, 0.5)["confusion_matrix"]
    assert cm == skm.confusion_matrix(y, (s >= 0.5).astype(int), labels=[0, 1]).tolist()
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, p.argmax(1), labels=[0, 1]).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_three_class_per_class_and_macro_auc_brier_confusion_equal_sklearn(seed):
    y, p = _three_class(seed)
    classes = ["a", "b", "c"]
    m = classification_metrics(y, p, classes)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    for i, c in enumerate(classes):
        assert m["auc_per_class"][c] == pytest.approx(skm.roc_auc_score(y == i, p[:, i]), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert m["confusion_matrix"]["matrix"] == skm.confusion_matrix(y, p.argmax(1)).tolist()
    assert brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p, labels=[0, 1, 2]), abs=1e-12)


def test_multi_label_auc_brier_and_confusion_equal_sklearn():
    y, p = _multi_label(5)
    classes = ["x", "y", "z"]
    m = classification_metrics(y, p, classes, multi_label=True)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"), abs=1e-12)
    mcm = skm.multilabel_confusion_matrix(y, (p >= 0.5).astype(int))
    for i, c in enumerate(classes):
        assert m["confusion_matrix"][c] == mcm[i].tolist()
    per_class = [skm.brier_score_loss(y[:, i], p[:, i]) for i in range(3)]
    assert brier_score(y, p, multi_label=True) == pytest.approx(np.mean(per_class), abs=1e-12)
    cal = calibration_metrics(y, p, classes, multi_label=True)
    assert cal["ece"] == pytest.approx(np.mean(list(cal["ece_per_class"].values())))
    assert set(cal["curves"]) == set(classes)


@pytest.mark.parametrize("seed", range(3))
def test_calibration_bins_equal_sklearn_calibration_curve(seed):
    y, s = _binary(seed, 200)
    s = np.r_[s, 0.0, 0.1, 0.2, 1.0]  # values on the bin edges
    y = np.r_[y, 0, 1, 0, 1]
    bins = calibration_bins(y, s, n_bins=10)
    frac, mean = skc.calibration_curve(y, s, n_bins=10, strategy="uniform")
    keep = [i for i, c in enumerate(bins["count"]) if c]
    np.testing.assert_allclose([bins["fraction_positive"][i] for i in keep], frac, atol=1e-12)
    np.testing.assert_allclose([bins["mean_predicted"][i] for i in keep], mean, atol=1e-12)
    assert sum(bins["count"]) == len(y)
    # ECE from sklearn's bins and counts
    edges = np.linspace(0, 1, 11)
    counts = np.bincount(np.searchsorted(edges[1:-1], s), minlength=10)
    counts = counts[counts > 0]
    assert expected_calibration_error(y, s) == pytest.approx(np.sum(counts / len(y) * np.abs(frac - mean)))


def test_three_class_ece_is_top_label():
    y, p = _three_class(2)
    cal = calibration_metrics(y, p, ["a", "b", "c"])
    correct = p.argmax(1) == y
    frac, mean = skc.calibration_curve(correct, p.max(1), n_bins=10)
    counts = np.array([c for c in cal["curves"]["top label"]["count"] if c])
    assert cal["ece"] == pytest.approx(np.sum(counts / len(y) * np.abs(frac - mean)), abs=1e-12)
    assert set(cal["curves"]) == {"top label", "a", "b", "c"}


def test_youden_threshold_by_hand_and_against_sklearn_roc():
    # thresholds  0.9   0.6   0.4   0.35  0.3   0.1
    # sens        1/3   2/3   2/3   1     1     1
    # spec        1     1     2/3   2/3   1/3   0
    # J           1/3   2/3   1/3   2/3   1/3   0      -> the highest of the tied maxima: 0.6
    y = [0, 0, 1, 0, 1, 1]
    s = [0.1, 0.3, 0.35, 0.4, 0.6, 0.9]
    assert choose_threshold(y, s) == 0.6
    assert choose_threshold(y, s, target_sensitivity=0.9) == 0.35
    assert choose_threshold(y, s, target_sensitivity=0.5) == 0.6
    assert choose_threshold([1, 1], [0.2, 0.4]) is None
    m = threshold_metrics(y, s, 0.6)
    assert (m["sensitivity"], m["specificity"], m["ppv"], m["npv"]) == (2 / 3, 1.0, 1.0, 0.75)
    assert m["confusion_matrix"] == [[3, 0], [1, 2]]
    for seed in range(3):
        yb, sb = _binary(seed)
        fpr, tpr, thr = skm.roc_curve(yb, sb, drop_intermediate=False)
        j = tpr - fpr
        assert choose_threshold(yb, sb) == pytest.approx(thr[np.flatnonzero(j >= j.max() - 1e-12)[0]])


def test_bootstrap_intervals_equal_scipy_on_the_same_resamples():
    y, s = _binary(11, 60)
    p = np.c_[1 - s, s]
    n_resamples, seed = 2000, 123
    ours = bootstrap_intervals(y, p, ["healthy", "disease"], thresholds={"disease": 0.5}, n_resamples=n_resamples,
                               seed=seed)

    def auc(i, axis=-1):
        return np.apply_along_axis(lambda j: roc_auc(y[j], s[j]), axis, i)

    def sens(i, axis=-1):
        return np.apply_along_axis(lambda j: ((s[j] >= 0.5) & (y[j] == 1)).sum() / (y[j] == 1).sum(), axis, i)

    def acc(i, axis=-1):  # argmax of [1 - s, s]: a tie at 0.5 goes to the first class
        return ((s[i] > 0.5) == (y[i] == 1)).mean(axis=axis)

    for stat, ci in ((auc, ours["auc_ci"]), (acc, ours["accuracy_ci"]),
                     (sens, ours["thresholds"]["disease"]["sensitivity_ci"])):
        res = bootstrap((np.arange(len(y)),), stat, n_resamples=n_resamples, method="percentile", vectorized=True,
                        rng=np.random.default_rng(seed))
        assert ci == pytest.approx([res.confidence_interval.low, res.confidence_interval.high], abs=1e-12)
    assert ours["bootstrap"]["undefined_auc"] == 0


def test_bootstrap_brier_interval_within_monte_carlo_tolerance_of_scipy_other_seed():
    y, s = _binary(4, 100)
    p = np.c_[1 - s, s]
    ours = bootstrap_intervals(y, p, ["a", "b"], n_resamples=2000, seed=1)["brier_ci"]
    res = bootstrap(((y - s) ** 2,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(99))
    width = res.confidence_interval.high - res.confidence_interval.low
    assert ours == pytest.approx([res.confidence_interval.low, res.confidence_interval.high], abs=0.1 * width)


def test_bootstrap_three_class_and_multi_label_intervals_hold_their_points():
    for (y, p), multi in ((_three_class(3), False), (_multi_label(3), True)):
        classes = ["a", "b", "c"]
        point = classification_metrics(y, p, classes, multi_label=multi)
        ci = bootstrap_intervals(y, p, classes, multi_label=multi, n_resamples=500, seed=0,
                                 thresholds={c: 0.5 for c in classes})
        assert ci["auc_ci"][0] <= point["auc"] <= ci["auc_ci"][1]
        assert ci["accuracy_ci"][0] <= point["accuracy"] <= ci["accuracy_ci"][1]
        for c in classes:
            lo, hi = ci["auc_per_class_ci"][c]
            assert lo <= point["auc_per_class"][c] <= hi
            assert set(ci["thresholds"][c]) == {"sensitivity_ci", "specificity_ci", "ppv_ci", "npv_ci"}
    # reproducible by seed, different across seeds
    y, p = _three_class(3)
    a = bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=5)
    assert a == bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=5)
    assert a["auc_ci"] != bootstrap_intervals(y, p, ["a", "b", "c"], n_resamples=200, seed=6)["auc_ci"]


def test_bootstrap_indices_are_scipys_draw():
    idx = bootstrap_indices(7, 5, seed=3)
    seen = []
    bootstrap((np.arange(7),), lambda i, axis=-1: seen.append(i.copy()) or i.mean(axis), n_resamples=5,
              vectorized=True, method="percentile", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(seen[0], idx)


def test_undefined_auc_replicates_are_left_out():
    y = np.array([0] * 9 + [1])  # one positive: many resamples have none
    s = np.linspace(0, 1, 10)
    ci = bootstrap_intervals(y, np.c_[1 - s, s], ["a", "b"], n_resamples=300, seed=0)
    assert 0 < ci["bootstrap"]["undefined_auc"] < 300
    assert ci["auc_ci"] == [1.0, 1.0]


@pytest.mark.parametrize("multi_label", [False, True])
def test_temperature_scaling_lowers_nll_and_keeps_decisions(multi_label):
    rng = np.random.default_rng(8)
    if multi_label:  # labels drawn from p: calibrated by construction
        p = 1 / (1 + np.exp(-rng.normal(0, 1.5, (400, 3))))
        y = (rng.random(p.shape) < p).astype(int)
    else:
        _, p = _three_class(8, 400)
        y = np.array([rng.choice(3, p=row) for row in p])
    over = apply_temperature(p, 0.3, multi_label=multi_label)  # overconfident
    fitted = fit_temperature(y, over, multi_label=multi_label)
    scaled = fitted.apply(over)
    assert fitted.temperature > 1.5
    assert negative_log_likelihood(y, scaled, multi_label=multi_label) < negative_log_likelihood(
        y, over, multi_label=multi_label) - 0.05
    assert fitted.nll_after == pytest.approx(negative_log_likelihood(y, scaled, multi_label=multi_label))
    if multi_label:
        np.testing.assert_array_equal(scaled >= 0.5, over >= 0.5)
    else:
        np.testing.assert_array_equal(scaled.argmax(1), over.argmax(1))
        np.testing.assert_allclose(scaled.sum(1), 1.0)
        # the NLL is sklearn's log loss
        assert negative_log_likelihood(y, scaled) == pytest.approx(skm.log_loss(y, scaled), rel=1e-9)
    # identity at T = 1 and a round trip through the stored record
    np.testing.assert_allclose(apply_temperature(p, 1.0, multi_label=multi_label), p, atol=1e-9)
    assert TemperatureScaling.from_dict(fitted.to_dict()) == fitted


def test_temperature_record_from_untrusted_json_is_checked():
    for bad in ({}, {"method": "temperature"}, {"method": "temperature", "temperature": -1},
                {"method": "temperature", "temperature": float("nan")}, {"method": "temperature", "temperature": "2"},
                {"method": "platt", "temperature": 1.0}, [1, 2]):
        with pytest.raises(ValueError):
            TemperatureScaling.from_dict(bad)
