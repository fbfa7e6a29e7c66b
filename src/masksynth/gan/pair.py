"""A G/D pair and the training images it learns from: what the training loop steps.

Per-class mode builds one pair per class, each over its own class; conditional mode one
pair over every class (class embedding in G, projection D).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from masksynth.config import GanConfig
from masksynth.errors import MasksynthError
from masksynth.gan.networks import Discriminator, Generator, build_discriminator, build_generator

FUSED_ADAM = ("cpu", "cuda")  # the devices torch's fused Adam kernel runs on


@dataclass
class GanPair:
    name: str  # the class name, or 'all' for the conditional pair
    class_index: int | None  # None: conditional over every class
    indices: torch.Tensor  # rows of the training images it learns from
    G: Generator
    D: Discriminator
    G_ema: Generator | None  # the exponential moving average of G, used for sampling
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    # What the training step calls: DDP wrappers under torchrun, else G and D themselves
    G_train: torch.nn.Module
    D_train: torch.nn.Module

    @property
    def sampler(self) -> Generator:
        """The generator that makes this pair's images (the EMA one when there is one)."""
        return self.G_ema if self.G_ema is not None else self.G

    def serves(self, class_index: int) -> bool:
        return self.class_index in (None, class_index)


def build_pairs(
    config: GanConfig, classes: list[str], labels: torch.Tensor, device: torch.device
) -> list[GanPair]:
    """Freshly initialised pairs (from the current torch seed) with their Adam optimisers."""
    if config.mode == "conditional":
        plan = [("all", None, torch.arange(len(labels)))]
    else:
        plan = [(name, k, torch.nonzero(labels == k).flatten()) for k, name in enumerate(classes)]
    pairs = []
    for name, class_index, indices in plan:
        if len(indices) == 0:
            raise MasksynthError(f"class {name!r} has no training images")
        G = build_generator(config, len(classes)).to(device, memory_format=torch.channels_last)
        D = build_discriminator(config, len(classes)).to(device, memory_format=torch.channels_last)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if config.ema_decay else None
        opt_g = _adam(G.parameters(), config.lr_g, config.betas, device)
        opt_d = _adam(D.parameters(), config.lr_d, config.betas, device)
        indices = indices.to(device)
        pairs.append(GanPair(name, class_index, indices, G, D, G_ema, opt_g, opt_d, G, D))
    return pairs


def _adam(params, lr: float, betas, device: torch.device) -> torch.optim.Adam:
    """Adam with its fused kernel where torch has one: the same update up to float rounding,
    2 to 5 % off quick's training step on a 2-core CPU (README, benchmarks/gan_family_speed.py)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=device.type in FUSED_ADAM)


def pair_for(pairs: list[GanPair], class_index: int) -> GanPair:
    return next(p for p in pairs if p.serves(class_index))
