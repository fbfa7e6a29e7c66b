"""Verdicts: is the synthetic set worse than unseen real photos, beyond chance and a margin?

Every rule has two parts: significance (so a few unlucky images do not fail a set) and
size (so a large set does not fail on a negligible excess). Thresholds are printed in the
report beside each value.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import fisher_exact
from sklearn.metrics import roc_auc_score

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
    y = np.r_[np.ones(len(members)), np.zeros(len(others))]
    s = np.r_[members, others]
    auc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(rounds):  # resample members and non-members separately (stratified)
        m = members[rng.integers(0, len(members), len(members))]
        o = others[rng.integers(0, len(others), len(others))]
        boots.append(roc_auc_score(y, np.r_[m, o]))
    low, high = np.quantile(boots, [0.025, 0.975])
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
