"""Authenticity (Alaa et al., ICML 2022) and identifiability (Yoon et al., 2020).

Authenticity: a synthetic sample is unauthentic when it is closer to its nearest training
sample t than any other training sample is to t. Identifiability: the share of training
samples that have a synthetic sample nearer than their nearest other training sample.
Both are compared with the same statistics for unseen real images (same sizes).
"""

from __future__ import annotations

import numpy as np

from masksynth.privacy.decide import excess_rate
from masksynth.privacy.distances import nearest
from masksynth.privacy.measures import PRIVACY, measure


def unauthentic(queries: np.ndarray, train: np.ndarray) -> np.ndarray:
    own, _ = nearest(train, train, exclude_self=True)
    d, index = nearest(queries, train)
    return d < own[index]


def identified(train: np.ndarray, queries: np.ndarray) -> np.ndarray:
    own, _ = nearest(train, train, exclude_self=True)
    d, _ = nearest(train, queries)
    return d < own


@measure(
    "authenticity",
    PRIVACY,
    "inception",
    "Share of synthetic samples that are authentic (not closer to their nearest training "
    "sample than its own nearest training neighbour), against held-out images.",
    "value = authentic share; fail: unauthentic share > H's + margin and Fisher p < 0.001",
)
def authenticity(cs, sets, config) -> dict:
    f = cs.features["inception"]
    bad_s = unauthentic(f["synthetic"], f["train"])
    bad_h = unauthentic(f["holdout"], f["train"])
    result = excess_rate(
        int(bad_s.sum()), len(bad_s), int(bad_h.sum()), len(bad_h), config.authenticity_margin
    )
    # report as authentic shares (higher is safer); the test is on the unauthentic ones
    for key in ("value", "baseline", "threshold"):
        if result.get(key) is not None:
            result[key] = round(1 - result[key], 4)
    return result


@measure(
    "identifiability",
    PRIVACY,
    "inception",
    "Share of training samples that some synthetic sample is nearer to than their nearest "
    "other training sample (Yoon et al.), against the same with held-out images (equal sizes).",
    "fail: share > H's + margin and Fisher p < 0.001; warn: > H + margin/2 and p < 0.01",
)
def identifiability(cs, sets, config) -> dict:
    f = cs.features["inception"]
    size = min(len(f["synthetic"]), len(f["holdout"]))
    rng = np.random.default_rng(config.seed)
    s = f["synthetic"][rng.permutation(len(f["synthetic"]))[:size]]
    h = f["holdout"][rng.permutation(len(f["holdout"]))[:size]]
    hit_s, hit_h = identified(f["train"], s), identified(f["train"], h)
    return {
        **excess_rate(
            int(hit_s.sum()), len(hit_s), int(hit_h.sum()), len(hit_h), config.authenticity_margin
        ),
        "compared_sizes": size,
    }
