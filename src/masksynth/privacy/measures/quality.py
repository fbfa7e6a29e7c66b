"""Quality checks: a set can be private because it is useless. These do not decide the
privacy verdict; they say whether the release is worth having."""

from __future__ import annotations

import numpy as np

from masksynth.metrics.gan_quality import prdc
from masksynth.privacy.measures import QUALITY, measure

POOR_BELOW = 0.5  # of the held-out images' own value


@measure(
    "face_rate",
    QUALITY,
    "identity",
    "Share of synthetic images in which YuNet finds a face, against held-out images.",
    f"poor: below {POOR_BELOW} x the held-out rate",
)
def face_rate(cs, sets, config) -> dict:
    ids = cs.features[next(iter(sets.identity.values())).space]  # every matcher uses YuNet
    rate = float((~np.isnan(ids["synthetic"]).any(1)).mean())
    base = float((~np.isnan(ids["holdout"]).any(1)).mean())
    return _graded(rate, base)


@measure(
    "precision",
    QUALITY,
    "inception",
    "Share of synthetic samples inside the real-image manifold (PRDC precision, k = 5, "
    "against held-out images), against one half of the held-out images vs the other.",
    f"poor: below {POOR_BELOW} x the held-out halves' precision",
)
def precision(cs, sets, config) -> dict:
    f = cs.features["inception"]
    hold = f["holdout"]
    if len(hold) < 16:
        return {"value": None, "verdict": "skipped", "reason": "fewer than 16 held-out images"}
    order = np.random.default_rng(config.seed).permutation(len(hold))
    half = len(hold) // 2
    k = min(5, half - 2)
    value = prdc(hold, f["synthetic"], k)["precision"]
    base = prdc(hold[order[:half]], hold[order[half:]], k)["precision"]
    return _graded(value, base)


def _graded(value: float, base: float) -> dict:
    return {
        "value": round(value, 4),
        "baseline": round(base, 4),
        "threshold": round(POOR_BELOW * base, 4),
        "verdict": "poor" if value < POOR_BELOW * base else "good",
    }
