"""Paired comparisons of two classifiers on the same test images, and summaries over seeds."""

from __future__ import annotations

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test on paired correctness; exact binomial when there are few discordances."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
    exact = only_a + only_b < 25
    result = mcnemar(table, exact=exact, correction=not exact)
    return {
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "exact": exact,
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
    }


def bootstrap(samples, statistic, reps: int, seed: int, paired: bool = False):
    """scipy.stats.bootstrap with a 95 % percentile interval: the one bootstrap of the
    project. `statistic(*samples, axis)` is vectorised; unpaired samples are resampled each
    on its own (stratified), paired ones by the same rows. Returns scipy's result."""
    return stats.bootstrap(
        samples,
        statistic,
        n_resamples=reps,
        vectorized=True,
        paired=paired,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, reps: int = 2000, seed: int = 0
) -> dict:
    """Accuracy difference b - a with a 95 % interval over resampled test images (the same
    images for both models)."""
    a, b = np.asarray(correct_a, float), np.asarray(correct_b, float)

    def difference(x, y, axis=-1):
        return y.mean(axis=axis) - x.mean(axis=axis)

    result = bootstrap((a, b), difference, reps, seed, paired=True)
    low, high = result.confidence_interval
    return {
        "difference": round(float(b.mean() - a.mean()), 6),
        "ci95": [round(float(low), 6), round(float(high), 6)],
        "reps": reps,
        "share_b_better": round(float((result.bootstrap_distribution > 0).mean()), 4),
    }


def mean_sd(values: list[float | None]) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": round(float(np.mean(present)), 6), "sd": round(sd, 6), "n": len(present)}
