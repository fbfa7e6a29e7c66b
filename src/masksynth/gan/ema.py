"""The EMA generator: an exponential moving average of G's weights, with its own BatchNorm
statistics (Karras et al.'s sampling generator; Yazici et al. 2019 on averaging in GANs)."""

from __future__ import annotations

import torch

from masksynth.gan.networks import Generator

BATCHNORM_BATCHES, BATCHNORM_BATCH_SIZE = 8, 64


@torch.no_grad()
def ema_update(ema: Generator, G: Generator, decay: float, step: int, ramp: float) -> None:
    """Move the EMA weights towards G's. Warm-up: early weights change fast, so a long
    average would mix bad generators; the decay grows to `decay` as (1 + s) / (ramp + s),
    which weights the step t of s by about (t / s) ** (ramp - 1): a smaller ramp averages
    more of the run. Weights only: the EMA generator's BatchNorm statistics are its own
    (refresh_batchnorm).
    """
    decay = min(decay, (1.0 + step) / (ramp + step))
    # one multi-tensor kernel for every weight, as torch.optim.swa_utils' EMA does
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in G.parameters()], 1 - decay)


class _LatentsIn(torch.nn.Module):
    """G called with one (z, labels) pair, the single input swa_utils.update_bn passes on."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.G = G

    def forward(self, batch: tuple) -> torch.Tensor:
        return self.G(*batch)


@torch.no_grad()
def refresh_batchnorm(G: Generator, seed: int, device: torch.device | str = "cpu") -> None:
    """Recompute G's BatchNorm running statistics for its current weights.

    Cumulative averages over BATCHNORM_BATCHES batches of seeded latents (and random classes
    for a conditional G), through torch.optim.swa_utils.update_bn; the seed keeps resumed
    runs bit-exact and leaves the training RNG untouched.
    """
    n_classes = G.n_classes
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(BATCHNORM_BATCHES):
        z = torch.randn(BATCHNORM_BATCH_SIZE, G.z_dim, 1, 1, generator=generator)
        labels = (
            torch.randint(n_classes, (BATCHNORM_BATCH_SIZE,), generator=generator).to(device)
            if n_classes
            else None
        )
        batches.append([(z.to(device), labels)])
    torch.optim.swa_utils.update_bn(batches, _LatentsIn(G))
