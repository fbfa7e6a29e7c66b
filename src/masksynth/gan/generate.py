"""Latents to uint8 images with a trained generator (for training grids and `sample`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from masksynth.errors import MasksynthError
from masksynth.seeds import LATENTS, derive_seed

EVALUATION_SEED = 10_007  # the latents quality is measured on, apart from any `sample` seed
MAX_EVALUATION_TRIES = 50  # blocks of evaluation latents a class selection may go through


def latents(seed: int, class_index: int, count: int, z_dim: int) -> torch.Tensor:
    """The latent block of one class for one seed: latent i is always the same vector."""
    generator = torch.Generator().manual_seed(derive_seed(seed, LATENTS, class_index))
    return torch.randn(count, z_dim, 1, 1, generator=generator)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 (N, 3, H, W) on the CPU."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def generate(
    generator: torch.nn.Module,
    z: torch.Tensor,
    labels: torch.Tensor | None,
    device: torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images for each latent, in fp32 and eval mode: image i depends on latent i alone."""
    was_training = generator.training
    generator.eval()
    out = []
    for start in range(0, len(z), batch_size):
        zb = z[start : start + batch_size].to(device)
        lb = None if labels is None else labels[start : start + batch_size].to(device)
        out.append(to_uint8(generator(zb, lb)))
    generator.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, 64, 64, dtype=torch.uint8)


def evaluation_images(
    generator: torch.nn.Module,
    class_index: int,
    n: int,
    z_dim: int,
    conditional: bool,
    device: torch.device,
    kept: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """n images of a class on the evaluation latents: what a run's quality is measured on,
    during training and when a finished run is measured again. With `kept` (a verdict per
    image, e.g. gan.select's), the first n kept images of those latents: what `sample` hands
    out."""
    if kept is None:
        return generate(
            generator,
            _block(class_index, 0, n, z_dim),
            _labels(n, class_index, conditional),
            device,
        )
    found, tried, block = [], 0, max(n, 256)
    while sum(len(f) for f in found) < n:
        if tried >= MAX_EVALUATION_TRIES * block:
            raise MasksynthError(
                f"the class selection kept fewer than {n} of {tried} fakes of class {class_index}"
            )
        images = generate(
            generator,
            _block(class_index, tried, block, z_dim),
            _labels(block, class_index, conditional),
            device,
        )
        found.append(images[kept(images, class_index)])
        tried += block
    return torch.cat(found)[:n]


def _block(class_index: int, start: int, count: int, z_dim: int) -> torch.Tensor:
    """Rows start .. start + count of the class's evaluation latents."""
    return latents(EVALUATION_SEED, class_index, start + count, z_dim)[start:]


def _labels(n: int, class_index: int, conditional: bool) -> torch.Tensor | None:
    return torch.full((n,), class_index) if conditional else None
