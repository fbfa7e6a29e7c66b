"""Re-identification: does a synthetic face pass for one of the training subjects?"""

from __future__ import annotations

import numpy as np

from masksynth.privacy.decide import excess_rate
from masksynth.privacy.identity import cosine_to_nearest
from masksynth.privacy.measures import PRIVACY, measure


@measure(
    "identity_reidentification",
    PRIVACY,
    "identity",
    "Share of synthetic faces whose most similar training face (SFace cosine) passes the "
    "verification threshold, against the same share for unseen real faces (H -> T).",
    "fail: rate > H's rate + margin and Fisher p < 0.001; warn: > H + margin/2 and p < 0.01",
)
def reidentification(cs, sets, config) -> dict:
    features = cs.features["identity"]
    sim_s, _ = cosine_to_nearest(features["synthetic"], features["train"])
    sim_h, _ = cosine_to_nearest(features["holdout"], features["train"])
    t = sets.identity_threshold
    faces_s, faces_h = ~np.isnan(sim_s), ~np.isnan(sim_h)
    result = excess_rate(
        int((sim_s[faces_s] >= t).sum()),
        int(faces_s.sum()),
        int((sim_h[faces_h] >= t).sum()),
        int(faces_h.sum()),
        config.identity_margin,
    )
    if not faces_s.any():
        # nobody can be recognised in images where no face is found
        result = {"value": 0.0, "threshold": None, "verdict": "pass", "n": 0}
        result["reason"] = "no face detected in any synthetic image"
    return {
        **result,
        "cosine_threshold": round(t, 4),
        "faces_found": int(faces_s.sum()),
        "median_cosine": _median(sim_s),
        "median_cosine_holdout": _median(sim_h),
    }


def _median(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(np.median(values)), 4) if len(values) else None
