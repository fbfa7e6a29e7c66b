"""The small-data family: FastGAN-style generator, projected discriminator on frozen features."""

from dataclasses import replace

import pytest
import torch
from conftest import SMALL_GAN_RUN

from masksynth.config import gan_config
from masksynth.errors import MasksynthError
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.networks import build_discriminator, build_generator, dcgan, fastgan, projected
from masksynth.gan.train import train_gan

TINY = dict(
    **SMALL_GAN_RUN,
    family="fastgan",
    loss="hinge",
    # the family's own rate: the quick preset's DCGAN rate (4e-4) is too fast for it
    lr_g=2e-4,
    lr_d=2e-4,
    g_width=4,
    d_width=8,
    # the projected discriminator has no class heads (quick's DCGAN has), nor so a class
    # selection of its fakes
    ac_weight=0.0,
    ac_twin=False,
    class_keep=1.0,
)


@pytest.mark.parametrize("class_norm", [False, True])
def test_shapes_and_the_class_matters(class_norm):
    config = gan_config("quick", **{**TINY, "g_class_norm": class_norm})
    G, D = build_generator(config, 2), build_discriminator(config, 2)
    z, labels = torch.randn(3, config.z_dim, 1, 1), torch.tensor([0, 1, 1])
    images = G(z, labels)
    assert images.shape == (3, 3, 64, 64)
    assert not torch.allclose(images[1], images[2])  # the latent decides the image
    with pytest.raises(ValueError, match="needs labels"):
        G(z)
    assert not torch.allclose(images, G(z, 1 - labels))  # so does the class
    logits = D(images, labels)
    assert logits.shape == (3,)
    assert not torch.allclose(D(images, labels), D(images, 1 - labels))  # the projection
    with pytest.raises(ValueError, match="needs labels"):
        D(images)


@pytest.mark.parametrize(
    ("family", "choice", "expected"),
    [
        ("fastgan", "auto", projected.Discriminator),
        ("dcgan", "auto", dcgan.Discriminator),
        ("fastgan", "dcgan", dcgan.Discriminator),
        ("dcgan", "projected", projected.Discriminator),
    ],
)
def test_the_discriminator_is_the_familys_own_unless_chosen(family, choice, expected):
    config = gan_config("quick", **{**TINY, "family": family, "discriminator": choice})
    D = build_discriminator(config, 2)
    assert type(D) is expected
    G = build_generator(config, 2)
    assert type(G) is (fastgan.Generator if family == "fastgan" else dcgan.Generator)
    labels = torch.tensor([0, 1])
    assert D(G(torch.randn(2, config.z_dim, 1, 1), labels), labels).shape == (2,)


def test_an_unknown_discriminator_or_a_private_projected_one_is_refused(colour_prep, tmp_path):
    unknown = gan_config("quick", **{**TINY, "discriminator": "x"})
    with pytest.raises(MasksynthError, match="--discriminator must be one of"):
        train_gan(colour_prep, tmp_path / "a", unknown)
    # DP-SGD needs the DCGAN discriminator's per-sample gradients (GroupNorm)
    private = gan_config(
        "quick", **{**TINY, "family": "dcgan", "loss": "bce", "discriminator": "projected"}
    )
    with pytest.raises(MasksynthError, match="--dp-epsilon trains the paper's DCGAN"):
        train_gan(colour_prep, tmp_path / "b", replace(private, dp_epsilon=5.0))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_feature_network_stays_frozen_and_in_eval_mode():
    """D trains in train mode, but its ImageNet features never change: no gradient reaches
    them, and their BatchNorm keeps ImageNet's statistics."""
    config = gan_config("quick", **TINY)
    D = build_discriminator(config, 2).train()
    assert D.features.training is False
    frozen = {k: v.clone() for k, v in D.features.state_dict().items()}
    mixing = {k: v.clone() for k, v in D.ccm.state_dict().items()}
    trainable = [p for p in D.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    opt = torch.optim.Adam(trainable, lr=0.1)
    for _ in range(2):
        loss = D(torch.rand(4, 3, 64, 64) * 2 - 1, torch.tensor([0, 1, 0, 1])).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in D.features.parameters())
    assert all(torch.equal(v, D.features.state_dict()[k]) for k, v in frozen.items())
    assert all(torch.equal(v, D.ccm.state_dict()[k]) for k, v in mixing.items())
    assert not all(torch.equal(a, b) for a, b in zip(before, trainable, strict=True))  # D learns


def test_a_resumed_run_ends_with_the_same_weights(colour_prep, tmp_path):
    config = gan_config("quick", epochs=2, deterministic=True, **TINY)
    train_gan(colour_prep, tmp_path / "straight", config)
    half = gan_config("quick", epochs=1, deterministic=True, **TINY)
    train_gan(colour_prep, tmp_path / "resumed", half)
    train_gan(colour_prep, tmp_path / "resumed", config, resume=True)
    a = load_checkpoint(checkpoint_path(tmp_path / "straight"))["units"]["all"]
    b = load_checkpoint(checkpoint_path(tmp_path / "resumed"))["units"]["all"]
    for part in ("G", "D", "G_ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
