"""Each privacy measure's core against small cases computed by hand."""

import numpy as np
import pytest
import torch

from masksynth.data.identity import most_similar
from masksynth.privacy.decide import attack_auc, excess_rate, worst
from masksynth.privacy.distances import k_nearest, nearest, pixels
from masksynth.privacy.measures.authenticity import identified, unauthentic
from masksynth.privacy.measures.copying import c_t
from masksynth.privacy.measures.dcr import copy_cuts, is_near_copy, near_copies


def test_nearest_and_exclude_self():
    ref = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    d, i = nearest(np.array([[3.0, 3.0], [9.0, 0.0]]), ref)
    assert i.tolist() == [1, 2] and d == pytest.approx([1.0, 1.0])
    d, i = nearest(ref, ref, exclude_self=True)
    assert i.tolist() == [1, 0, 1] and d == pytest.approx([5.0, 5.0, np.hypot(7, 4)])
    # an exact copy is at distance exactly 0 even in 12k dimensions
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    d, i = nearest(pixels(images[:2]), pixels(images))
    assert d.tolist() == [0.0, 0.0] and i.tolist() == [0, 1]


def test_most_similar_skips_faceless_rows_for_both_matchers():
    ref = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    queries = np.array([[0.6, 0.8], [np.nan, np.nan]])
    best, index = most_similar("sface", queries, ref)  # cosine
    assert best[0] == pytest.approx(0.8) and index[0] == 2
    assert np.isnan(best[1]) and index[1] == -1
    best, index = most_similar("dlib", queries, ref)  # minus Euclidean distance
    assert best[0] == pytest.approx(-np.hypot(0.6, 0.2)) and index[0] == 2
    assert np.isnan(best[1]) and index[1] == -1


def test_near_copies_need_a_small_distance_and_a_small_ratio():
    train = np.arange(0, 100, 10, dtype=float)[:, None]  # 0, 10, ..., 90
    # held-out d1: 1..9 (0.5 apart), ratios d1 / (10 - d1)
    holdout = np.r_[np.arange(1, 5, 0.5), np.arange(1, 5, 0.5) + 40][:, None]
    features = {"train": train, "holdout": holdout}
    cuts = copy_cuts(holdout, train, 0.25)
    assert cuts[0] == pytest.approx(1.875)  # 25 % of 1, 1, 1.5, 1.5, 2, ... (interpolated)
    # synthetic: a copy (0, 0/10), a point 1 from T (ratio 1/9), a mid point (5, 5/5)
    synthetic = np.array([[30.0], [61.0], [45.0]])
    d = k_nearest(synthetic, train, 2)[0]
    assert is_near_copy(d, cuts).tolist() == [True, True, False]
    result = near_copies({**features, "synthetic": synthetic}, 0.25)
    assert result["value"] == pytest.approx(2 / 3, abs=1e-4) and result["exact_copies"] == 1
    # far from every training image but nearest to one (a "hub"): no copy; nor a smooth
    # image halfway between many
    assert not is_near_copy(k_nearest(np.array([[-30.0]]), train, 2)[0], cuts).any()


def test_c_t_sign():
    rng = np.random.default_rng(0)
    train, holdout = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    copies = train[:200] + 1e-3
    fresh = rng.normal(size=(200, 2))
    blurry = rng.normal(size=(200, 2)) * 3  # far from T: underfitting, not copying
    assert c_t(train, holdout, copies, 5, 0)[0] < -3
    assert abs(c_t(train, holdout, fresh, 5, 0)[0]) < 2
    assert c_t(train, holdout, blurry, 5, 0)[0] > 3


def test_authenticity_and_identifiability_by_hand():
    train = np.array([[0.0], [10.0], [30.0]])  # own nearest-neighbour distances 10, 10, 20
    queries = np.array([[1.0], [19.0], [45.0]])  # nearest 0 (1 < 10), 10 (9 < 10), 30 (15 < 20)
    assert unauthentic(queries, train).tolist() == [True, True, True]
    assert unauthentic(np.array([[-11.0], [52.0]]), train).tolist() == [False, False]
    # T rows with a query nearer than their own neighbour: 0 (1 < 10), 10 (9 < 10), 30 (15 < 20)
    assert identified(train, queries).tolist() == [True, True, True]
    assert identified(train, np.array([[100.0]])).tolist() == [False, False, False]


def test_excess_rate_needs_significance_and_size():
    assert excess_rate(90, 100, 10, 100, 0.05)["verdict"] == "fail"
    assert excess_rate(12, 100, 10, 100, 0.05)["verdict"] == "pass"  # within chance
    assert excess_rate(5, 5, 0, 5, 0.05)["verdict"] == "warn"  # large but only 5 cases
    skipped = excess_rate(0, 0, 3, 10, 0.05)
    assert skipped["verdict"] == "skipped" and skipped["value"] is None


def test_attack_auc_rules():
    rng = np.random.default_rng(0)
    perfect = attack_auc(np.arange(50) + 100.0, np.arange(50.0), 200, 0)
    assert perfect["value"] == 1.0 and perfect["verdict"] == "fail"
    chance = attack_auc(rng.normal(size=300), rng.normal(size=300), 200, 0)
    assert chance["verdict"] == "pass" and chance["ci95"][0] < 0.5 < chance["ci95"][1]
    weak = attack_auc(rng.normal(0.25, 1, 2000), rng.normal(0, 1, 2000), 200, 0)
    assert 0.5 < weak["value"] < 0.6 and weak["verdict"] == "warn"


def test_worst_verdict():
    assert worst(["pass", "warn", "skipped"]) == "warn"
    assert worst(["pass", "fail", "warn"]) == "fail"
    assert worst(["skipped"]) == "skipped"


def test_the_interval_is_around_the_auc_with_ties_counted_half():
    """The bootstrap resamples the AUC as Mann-Whitney's U over the pairs, which equals
    sklearn's ROC-AUC (ties count half); the interval holds the AUC."""
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    m, o = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    auc = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[m, o])
    assert mannwhitneyu(m, o).statistic / (40 * 60) == pytest.approx(auc)
    result = attack_auc(m, o, 300, 0)
    assert result["value"] == pytest.approx(auc, abs=1e-4)
    assert result["ci95"][0] < result["value"] < result["ci95"][1]
