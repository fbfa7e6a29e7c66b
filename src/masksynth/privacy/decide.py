"""Verdicts: is the synthetic set worse than unseen real photos, beyond chance and a margin?

Every rule has two parts: significance (so a few unlucky images do not fail a set) and
size (so a large set does not fail on a negligible excess). Thresholds are printed in the
report beside each value.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import fisher_exact, mannwhitneyu
from sklearn.metrics import roc_auc_score

from masksynth.metrics.stats import bootstrap

FAIL_P, WARN_P = 0.001, 0.01
AUC_FAIL = 0.6
ORDER = {"fail": 3, "warn": 2, "poor": 2, "pass": 1, "good": 1, "skipped": 0}


def worst(verdicts) -> str:
    verdicts = list(verdicts)
    return max(verdicts, key=ORDER.__getitem__) if verdicts else "skipped"


def _grade(p: float, excess: float, margin: float) -> str:
    if p < FAIL_P and excess > margin:
        return "fail"
    if p < WARN_P and excess > margin / 2:
        return "warn"
    return "pass"


def excess_rate(k: int, n: int, k_base: int, n_base: int, margin: float) -> dict:
    """Is the rate k/n higher than the baseline rate k_base/n_base (one-sided Fisher)?"""
    if n == 0:
        return {"value": None, "verdict": "skipped", "reason": "no cases to count"}
    rate = k / n
    base = k_base / n_base if n_base else 0.0
    p = float(fisher_exact([[k, n - k], [k_base, n_base - k_base]], "greater").pvalue)
    return {
        "value": round(rate, 4),
        "baseline": round(base, 4),
        "threshold": round(base + margin, 4),
        "p_value": p,
        "n": n,
        "verdict": _grade(p, rate - base, margin),
    }


def attack_auc(members: np.ndarray, others: np.ndarray, rounds: int, seed: int) -> dict:
    """ROC-AUC of a membership score (higher = 'was in training') with a bootstrap 95 % CI.

    fail: AUC >= 0.6 and the interval excludes 0.5; warn: the interval excludes 0.5.
    """
    members, others = np.asarray(members, float), np.asarray(others, float)
    auc = float(
        roc_auc_score(np.r_[np.ones(len(members)), np.zeros(len(others))], np.r_[members, others])
    )

    def auc_of(m, o, axis=-1):  # the AUC is Mann-Whitney's U over the number of pairs
        return mannwhitneyu(m, o, axis=axis).statistic / (m.shape[axis] * o.shape[axis])

    # members and non-members resampled each on its own (stratified)
    low, high = bootstrap((members, others), auc_of, rounds, seed).confidence_interval
    verdict = "pass"
    if low > 0.5:
        verdict = "fail" if auc >= AUC_FAIL else "warn"
    return {
        "value": round(auc, 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "baseline": 0.5,
        "threshold": AUC_FAIL,
        "n": [len(members), len(others)],
        "verdict": verdict,
    }
