"""The data-copying test C_T of Meehan, Chaudhuri and Dasgupta (AISTATS 2020).

Space is cut into cells by k-means on T. In each cell, a Mann-Whitney U test compares the
distances to T of synthetic samples with those of held-out samples; the Z scores are
averaged with the held-out share of each cell as weight. C_T well below 0 means synthetic
samples sit closer to T than fresh data does: copying. (Well above 0: underfitting.)
"""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans

from masksynth.privacy.distances import nearest
from masksynth.privacy.measures import PRIVACY, measure

FAIL_BELOW, WARN_BELOW = -3.0, -2.0
MIN_PER_CELL = 5


def c_t(train: np.ndarray, holdout: np.ndarray, synthetic: np.ndarray, cells: int, seed: int):
    """C_T and the per-cell Z scores; None when no cell holds enough of both sets."""
    cells = max(1, min(cells, len(holdout) // (2 * MIN_PER_CELL), len(train)))
    km = KMeans(cells, n_init=4, random_state=seed).fit(train.astype(np.float64))
    cell_h = km.predict(holdout.astype(np.float64))
    cell_s = km.predict(synthetic.astype(np.float64))
    d_h, _ = nearest(holdout, train)
    d_s, _ = nearest(synthetic, train)
    zs, weights = [], []
    for j in range(cells):
        h, s = d_h[cell_h == j], d_s[cell_s == j]
        if len(h) < MIN_PER_CELL or len(s) < MIN_PER_CELL:
            continue  # Meehan et al. drop cells with too few samples
        u = mannwhitneyu(s, h, alternative="two-sided").statistic  # pairs with d_s > d_h
        m, n = len(s), len(h)
        zs.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
        weights.append(len(h) / len(d_h))
    if not zs:
        return None, []
    return float(np.average(zs, weights=weights)), [round(float(z), 3) for z in zs]


@measure(
    "data_copying_ct",
    PRIVACY,
    "inception",
    "Meehan et al.'s C_T: per k-means cell of T, are synthetic samples closer to T than "
    "held-out samples (Mann-Whitney Z, averaged)?",
    f"fail: C_T < {FAIL_BELOW}; warn: C_T < {WARN_BELOW} (about 0 for fresh data)",
)
def data_copying(cs, sets, config) -> dict:
    f = cs.features["inception"]
    value, zs = c_t(f["train"], f["holdout"], f["synthetic"], config.cells, config.seed)
    if value is None:
        return {"value": None, "verdict": "skipped", "reason": "too few samples per cell"}
    verdict = "fail" if value < FAIL_BELOW else "warn" if value < WARN_BELOW else "pass"
    return {
        "value": round(value, 3),
        "baseline": 0.0,
        "threshold": FAIL_BELOW,
        "cell_z": zs,
        "verdict": verdict,
    }
