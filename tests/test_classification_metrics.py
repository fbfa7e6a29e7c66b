import numpy as np
import pytest
from conftest import BINARY_KEYS

from masksynth.metrics.classification import binary_metrics, wilson
from masksynth.metrics.stats import mcnemar_test, mean_sd, paired_bootstrap


def _labels_scores(tp, fn, tn, fp, positive=1):
    negative = 1 - positive
    y_true = [positive] * (tp + fn) + [negative] * (tn + fp)
    y_score = [0.9] * tp + [0.1] * fn + [0.2] * tn + [0.7] * fp
    return np.array(y_true), np.array(y_score)


def test_rates_for_the_positive_class_by_hand():
    y_true, y_score = _labels_scores(tp=8, fn=2, tn=15, fp=5)
    m = binary_metrics(y_true, y_score, positive=1)
    assert set(m) == BINARY_KEYS
    assert m["confusion"] == {"tp": 8, "fn": 2, "tn": 15, "fp": 5} and m["n"] == 30
    assert m["sensitivity"]["value"] == pytest.approx(0.8)
    assert (m["sensitivity"]["k"], m["sensitivity"]["n"]) == (8, 10)
    assert m["specificity"]["value"] == pytest.approx(0.75)
    assert m["accuracy"]["value"] == pytest.approx(23 / 30)
    assert m["balanced_accuracy"] == pytest.approx(0.775)
    assert m["f1"] == pytest.approx(16 / 23, abs=1e-6)


def test_positive_class_choice_swaps_sensitivity_and_specificity():
    y_true, y_score = _labels_scores(tp=8, fn=2, tn=15, fp=5)
    flipped = binary_metrics(y_true, 1 - y_score, positive=0)
    assert flipped["sensitivity"]["value"] == pytest.approx(0.75)
    assert flipped["specificity"]["value"] == pytest.approx(0.8)


def test_wilson_interval_by_hand():
    # 8/10: centre (8 + 1.96^2/2) / (10 + 1.96^2) = 0.7220, half-width 0.2266
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) is None
    assert wilson(0, 5)[0] == 0.0


def test_absent_class_gives_null_rates():
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.8, 0.3]), positive=1)
    assert m["sensitivity"]["value"] is None and m["sensitivity"]["ci95"] is None
    assert m["specificity"]["value"] == pytest.approx(2 / 3)
    assert m["roc_auc"] is None and m["balanced_accuracy"] is None


def test_mcnemar_by_hand():
    # 10 images only A gets right, 2 only B: exact two-sided p = 2 * P(X <= 2 | 12, 0.5)
    a = np.array([1] * 10 + [0] * 2 + [1] * 20, bool)
    b = np.array([0] * 10 + [1] * 2 + [1] * 20, bool)
    result = mcnemar_test(a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (10, 2)
    assert result["exact"] and result["p_value"] == pytest.approx(2 * 79 / 4096)


def test_paired_bootstrap_and_mean_sd():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 0] * 10, bool)
    b = np.array([1, 1, 1, 0, 1, 1, 1, 0] * 10, bool)
    result = paired_bootstrap(a, b, reps=500)
    assert result["difference"] == pytest.approx(0.25)
    assert result["ci95"][0] > 0 and result["ci95"][1] < 0.5
    assert mean_sd([0.5, 0.7]) == {"mean": 0.6, "sd": pytest.approx(0.141421, abs=1e-6), "n": 2}
    assert mean_sd([None])["mean"] is None
