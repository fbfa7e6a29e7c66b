"""The white-box membership attack finds the training images of a GAN that memorised them."""

import numpy as np
import torch
from imaging import encode, picture, write
from sklearn.metrics import roc_auc_score

from masksynth.config import PrepareConfig, gan_config
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.gan.train import train_gan
from masksynth.privacy.sets import membership_scorer


def _auc(members: np.ndarray, others: np.ndarray) -> float:
    return roc_auc_score(
        np.r_[np.ones(len(members)), np.zeros(len(others))], np.r_[members, others]
    )


def test_whitebox_attack_detects_the_members_of_an_overfit_gan(tmp_path):
    # 12 training images per class and 40 passes over them: D memorises its training set
    for k in range(40):
        write(tmp_path / f"raw/with_mask/{k:02d}.png", encode(picture(1000 + k, (64, 64)), "PNG"))
        write(
            tmp_path / f"raw/without_mask/{k:02d}.png", encode(picture(2000 + k, (64, 64)), "PNG")
        )
    prep = tmp_path / "prep"
    prepare(
        tmp_path / "raw",
        prep,
        PrepareConfig(sizes=(64,), face_crop=False, split=(0.3, 0.2, 0.5), workers=1),
    )
    config = gan_config(
        "paper",
        mode="conditional",
        g_width=8,
        d_width=8,
        batch_size=4,
        epochs=4,
        lr_d=1e-3,
        device="cpu",
        precision="fp32",
        final_metrics=False,
    )
    train_gan(prep, tmp_path / "gan", config)
    score = membership_scorer({"run_dir": str(tmp_path / "gan")}, torch.device("cpu"), seed=0)
    train, val, test = (load_split(prep, s, 64) for s in ("train", "val", "test"))
    for k in range(2):
        members, others = score(train.images[train.labels == k], test.images[test.labels == k], k)
        assert _auc(members, others) > 0.9
        # two sets of unseen images: no membership to find, a much lower AUC
        unseen_a, unseen_b = score(val.images[val.labels == k], test.images[test.labels == k], k)
        assert _auc(unseen_a, unseen_b) < _auc(members, others) - 0.15
