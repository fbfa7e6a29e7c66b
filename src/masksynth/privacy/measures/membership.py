"""Membership inference: can an attacker tell the GAN's training images from unseen ones?

White-box (LOGAN, Hayes et al. 2019): the GAN's own discriminator scores training images
higher when it has memorised them; it scores them as it was trained (see
privacy.sets.membership_scorer). Black-box (GAN-Leaks, Chen et al. 2020): an image close
to some synthetic image was more likely in training. Both give a ROC-AUC of T against H.
"""

from __future__ import annotations

from masksynth.privacy.decide import attack_auc
from masksynth.privacy.distances import nearest
from masksynth.privacy.measures import PRIVACY, measure

RULE = "fail: AUC >= 0.6 and its 95 % bootstrap interval excludes 0.5; warn: interval > 0.5"


@measure(
    "membership_whitebox",
    PRIVACY,
    "discriminator",
    "ROC-AUC of the GAN discriminator's score at telling training images from held-out ones "
    "(LOGAN).",
    RULE,
)
def whitebox(cs, sets, config) -> dict:
    if sets.membership is None:
        return {
            "value": None,
            "verdict": "skipped",
            "reason": "no GAN checkpoint found for this synthetic set (sample.json run_dir)",
        }
    members, others = sets.membership(cs.images["train"], cs.images["holdout"], cs.index)
    result = attack_auc(members, others, config.bootstrap, config.seed)
    if result["verdict"] != "pass":
        low, high = result["ci95"]
        result["reason"] = (
            f"the GAN's discriminator scores the {cs.name} training photos above unseen ones "
            f"(AUC {result['value']:.3f}, 95 % interval {low:.3f}-{high:.3f}): the checkpoint "
            "remembers its training set, which the images need not show (the other measures "
            "judge them); share the images, not the checkpoint, or train with --dp-epsilon"
        )
    return result


@measure(
    "membership_blackbox",
    PRIVACY,
    "pixel",
    "ROC-AUC of 'distance to the nearest synthetic image' at telling training images from "
    "held-out ones (GAN-Leaks, full black-box).",
    RULE,
)
def blackbox(cs, sets, config) -> dict:
    f = cs.features["pixel"]
    d_t, _ = nearest(f["train"], f["synthetic"])
    d_h, _ = nearest(f["holdout"], f["synthetic"])
    return attack_auc(-d_t, -d_h, config.bootstrap, config.seed)
