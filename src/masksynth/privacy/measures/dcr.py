"""Distance to closest record (DCR): are synthetic images nearer to training images than
unseen real images are?

A near copy must pass two cuts, both set at the q-quantile of the held-out images H:
its distance d1 to the nearest training image is smaller than all but q of H's, and the
ratio d1/d2 (nearest over second nearest) too. A copy is small in both; an image near a
"hub" photo that is near everything, or a smooth image near many faces, is not. (In pixel
space images are standardised first: see `distances.pixels`.)
"""

from __future__ import annotations

import numpy as np

from masksynth.privacy.decide import excess_rate
from masksynth.privacy.distances import distance_ratio, k_nearest
from masksynth.privacy.measures import PRIVACY, measure

RULE = (
    "near copy: DCR d1 and ratio d1/d2 both below the q-quantiles of H's "
    "(q = near_copy_quantile); fail: share > H's share + q and Fisher p < 0.001; "
    "warn: > H's + q/2 and p < 0.01"
)


def copy_cuts(holdout: np.ndarray, train: np.ndarray, quantile: float) -> tuple[float, float]:
    """The (d1, d1/d2) cuts below which an image counts as a near copy of a training image."""
    d = k_nearest(holdout, train, 2)[0]
    ratio = distance_ratio(d[:, 0], d[:, 1])
    return float(np.quantile(d[:, 0], quantile)), float(np.quantile(ratio, quantile))


def is_near_copy(d: np.ndarray, cuts: tuple[float, float]) -> np.ndarray:
    """`d`: (n, 2) distances to the two nearest training images."""
    return (d[:, 0] < cuts[0]) & (distance_ratio(d[:, 0], d[:, 1]) < cuts[1])


def near_copies(features: dict, quantile: float) -> dict:
    cuts = copy_cuts(features["holdout"], features["train"], quantile)
    d_s = k_nearest(features["synthetic"], features["train"], 2)[0]
    d_h = k_nearest(features["holdout"], features["train"], 2)[0]
    copies_s, copies_h = is_near_copy(d_s, cuts), is_near_copy(d_h, cuts)
    result = excess_rate(
        int(copies_s.sum()), len(copies_s), int(copies_h.sum()), len(copies_h), quantile
    )
    return {
        **result,
        "near_copy_distance": round(cuts[0], 4),
        "near_copy_ratio": round(cuts[1], 4),
        "median_dcr": round(float(np.median(d_s[:, 0])), 4),
        "median_dcr_holdout": round(float(np.median(d_h[:, 0])), 4),
        # for reference: the share plain DCR would flag (blur-sensitive, see above)
        "plain_dcr_share": round(float((d_s[:, 0] < cuts[0]).mean()), 4),
        "exact_copies": int((d_s[:, 0] < 1e-6).sum()),
    }


@measure(
    "dcr_pixel",
    PRIVACY,
    "pixel",
    "Share of synthetic images that are near copies of one training image in pixel space "
    "(64 px, each image standardised; Euclidean), judged against the held-out images.",
    RULE,
)
def dcr_pixel(cs, sets, config) -> dict:
    return near_copies(cs.features["pixel"], config.near_copy_quantile)


@measure(
    "dcr_inception",
    PRIVACY,
    "inception",
    "The same in Inception-v3 feature space (subsets), where near copies that moved, "
    "flipped or changed colour are still close.",
    RULE,
)
def dcr_inception(cs, sets, config) -> dict:
    return near_copies(cs.features["inception"], config.near_copy_quantile)
