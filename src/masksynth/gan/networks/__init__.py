"""Generator and discriminator families, built from a GanConfig.

- `dcgan`: the paper's DCGAN pair (dcgan.py).
- `fastgan`: a FastGAN-style generator (fastgan.py) against a projected discriminator on
  frozen EfficientNet-lite0 features (projected.py), for small data and short budgets.
  `--discriminator dcgan` pairs the FastGAN generator with the DCGAN discriminator instead.

Every Generator maps (z, labels) to images in [-1, 1]; every Discriminator maps (image,
labels) to one logit per image. A new family is a module here and a branch below.
"""

from __future__ import annotations

from torch import nn

from masksynth.config import GanConfig
from masksynth.gan.networks import fastgan, projected
from masksynth.gan.networks.dcgan import D_NORMS, IMAGE_SIZE, Z_DIM, Discriminator, Generator

FAMILIES = ("dcgan", "fastgan")
DISCRIMINATORS = ("auto", "dcgan", "projected")

__all__ = [
    "DISCRIMINATORS",
    "D_NORMS",
    "FAMILIES",
    "IMAGE_SIZE",
    "Z_DIM",
    "Discriminator",
    "Generator",
    "build_discriminator",
    "build_generator",
    "discriminator_kind",
]


def build_generator(config: GanConfig, n_classes: int) -> nn.Module:
    classes = n_classes if config.mode == "conditional" else 0
    class_norm = config.g_class_norm and bool(classes)  # a per-class pair has one class
    family = fastgan.Generator if config.family == "fastgan" else Generator
    return family(config.z_dim, config.g_width, classes, class_norm, config.g_low_pass)


def build_discriminator(config: GanConfig, n_classes: int) -> nn.Module:
    classes = n_classes if config.mode == "conditional" else 0
    if discriminator_kind(config) == "projected":
        return projected.Discriminator(config.d_width, classes, config.d_input_size)
    # DP needs per-sample gradients, which BatchNorm's batch statistics would mix up.
    d_norm = "group" if config.dp_epsilon else config.d_norm
    heads = (1 + config.ac_twin) if config.ac_weight else 0
    return Discriminator(config.d_width, classes, d_norm, class_heads=heads)


def discriminator_kind(config: GanConfig) -> str:
    """'dcgan' or 'projected': the config's discriminator, 'auto' meaning the family's own."""
    if config.discriminator not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {config.discriminator!r}")
    if config.discriminator != "auto":
        return config.discriminator
    return "projected" if config.family == "fastgan" else "dcgan"
