"""Re-identification: does a synthetic face pass for one of the training subjects?

Judged with every face matcher of the audit; the stronger evidence decides (the worst
verdict). Images without a detectable face are not counted as passing: their share is
reported, and above `identity_max_faceless` the measure cannot judge (warn).
"""

from __future__ import annotations

import numpy as np

from masksynth.data.identity import most_similar
from masksynth.privacy.decide import ORDER, excess_rate
from masksynth.privacy.measures import PRIVACY, measure


@measure(
    "identity_reidentification",
    PRIVACY,
    "identity",
    "Share of synthetic faces whose most similar training face passes the same-person "
    "threshold, against the same share for unseen real faces (H -> T), for each face "
    "matcher (SFace, dlib).",
    "per matcher: fail: rate > H's rate + margin and Fisher p < 0.001; warn: > H + margin/2 "
    "and p < 0.01, or more faceless synthetic images than identity_max_faceless (cannot "
    "judge); the worst matcher decides",
)
def reidentification(cs, sets, config) -> dict:
    per_matcher = {
        name: _one_matcher(cs, name, space, config) for name, space in sets.identity.items()
    }
    # the worst verdict decides; on a tie, the matcher with more power speaks
    decider = max(
        per_matcher,
        key=lambda n: (ORDER[per_matcher[n]["verdict"]], per_matcher[n]["power"] or 0.0),
    )
    headline = per_matcher[decider]
    return {
        **{k: headline.get(k) for k in ("value", "baseline", "threshold", "p_value", "n")},
        "verdict": headline["verdict"],
        "matcher": decider,
        "faceless_share": headline["faceless_share"],
        "power": headline["power"],
        **({"reason": headline["reason"]} if headline.get("reason") else {}),
        "matchers": per_matcher,
    }


def _one_matcher(cs, name, space, config) -> dict:
    features = cs.features[space.space]
    sim_s, _ = most_similar(name, features["synthetic"], features["train"])
    sim_h, _ = most_similar(name, features["holdout"], features["train"])
    t = space.threshold
    faces_s, faces_h = ~np.isnan(sim_s), ~np.isnan(sim_h)
    faceless = 1.0 - float(faces_s.mean()) if len(sim_s) else 1.0
    result = excess_rate(
        int((sim_s[faces_s] >= t).sum()),
        int(faces_s.sum()),
        int((sim_h[faces_h] >= t).sum()),
        int(faces_h.sum()),
        config.identity_margin,
    )
    if faceless > config.identity_max_faceless:
        # a face nobody can detect is not a face that passes: it is one nobody checked
        result["verdict"] = "fail" if result["verdict"] == "fail" else "warn"
        result["reason"] = (
            f"cannot judge: {faceless:.0%} of synthetic images show no detectable face "
            f"(held-out: {1 - float(faces_h.mean()):.0%}); limit {config.identity_max_faceless:.0%}"
        )
    return {
        **result,
        "similarity": space.matcher.similarity,
        "same_person_threshold": round(t, 4),
        "threshold_source": space.calibration["source"],
        "power": space.calibration.get("power"),
        "faces_found": int(faces_s.sum()),
        "faceless_share": round(faceless, 4),
        "faceless_share_holdout": round(1 - float(faces_h.mean()), 4) if len(sim_h) else None,
        "median_similarity": _median(sim_s),
        "median_similarity_holdout": _median(sim_h),
    }


def _median(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(np.median(values)), 4) if len(values) else None
