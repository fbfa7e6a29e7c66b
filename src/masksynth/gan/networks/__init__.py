"""Generator and discriminator families, built from a GanConfig.

One family today: the paper's DCGAN (`dcgan`). A new family is a module here with a
Generator (z, labels) -> image in [-1, 1] and a Discriminator (image, labels) -> logits,
and one branch in each factory below.
"""

from __future__ import annotations

from masksynth.config import GanConfig
from masksynth.gan.networks.dcgan import IMAGE_SIZE, Z_DIM, Discriminator, Generator

__all__ = [
    "IMAGE_SIZE",
    "Z_DIM",
    "Discriminator",
    "Generator",
    "build_discriminator",
    "build_generator",
]


def build_generator(config: GanConfig, n_classes: int) -> Generator:
    conditional = config.mode == "conditional"
    return Generator(config.z_dim, config.g_width, n_classes if conditional else 0)


def build_discriminator(config: GanConfig, n_classes: int) -> Discriminator:
    conditional = config.mode == "conditional"
    # DP needs per-sample gradients, which BatchNorm's batch statistics would mix up.
    d_norm = "group" if config.dp_epsilon else config.d_norm
    return Discriminator(config.d_width, n_classes if conditional else 0, d_norm)
