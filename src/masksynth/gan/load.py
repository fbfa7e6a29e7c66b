"""A trained run's networks, from its checkpoint: what every consumer of a GAN loads.

`sample`, the training grids' readers, the quality metrics and the privacy audit all go
through these two functions, so a checkpoint is read (safely, weights only) one way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from masksynth.config import GanConfig
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.generate import evaluation_images
from masksynth.gan.networks import Discriminator, Generator, build_discriminator, build_generator
from masksynth.torchio import load_weights


def load_generators(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[dict, dict[int, tuple[Generator, bool, str]]]:
    """The checkpoint state and, per class index, (generator in eval mode, conditional?,
    which weights: 'G_ema' when the run has an EMA generator, else 'G')."""
    path = checkpoint_path(Path(run_dir))
    state = load_checkpoint(path, "cpu")
    config = GanConfig.from_dict(state["config"])
    generators = {}
    for name, class_index in state["unit_classes"].items():
        saved = state["units"][name]
        which = "G_ema" if "G_ema" in saved else "G"
        G = build_generator(config, len(state["classes"]))
        load_weights(G, saved.get(which), path, f"GAN checkpoint's {which} of {name!r}")
        # channels_last as in training (gan.pair): another memory format picks other kernels,
        # whose rounding can move a pixel (AMX CPUs), so a finished run would not measure
        # exactly as its training measured it
        G.to(device, memory_format=torch.channels_last).eval()
        for k in _served(state, class_index):
            generators[k] = (G, class_index is None, which)
    return state, generators


def load_discriminators(
    run_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[GanConfig, dict[int, tuple[Discriminator, bool]]]:
    """The run's config and, per class index, (trained D, conditional?)."""
    path = checkpoint_path(Path(run_dir))
    state = load_checkpoint(path)
    config = GanConfig.from_dict(state["config"])
    discriminators = {}
    for name, class_index in state["unit_classes"].items():
        D = build_discriminator(config, len(state["classes"]))
        load_weights(D, state["units"][name].get("D"), path, f"GAN checkpoint's D of {name!r}")
        for k in _served(state, class_index):
            discriminators[k] = (
                D.to(device, memory_format=torch.channels_last),
                class_index is None,
            )
    return config, discriminators


def evaluation_sampler(
    run_dir: str | Path, device: torch.device
) -> tuple[dict, Callable[[int, int], torch.Tensor]]:
    """The checkpoint state and `sample(class index, n)`: n uint8 images of a class on the
    evaluation latents, from the generator the run samples with: what its training's
    quality metrics were computed on."""
    state, generators = load_generators(run_dir, device)
    z_dim = GanConfig.from_dict(state["config"]).z_dim

    def sample(class_index: int, n: int) -> torch.Tensor:
        G, conditional, _ = generators[class_index]
        return evaluation_images(G, class_index, n, z_dim, conditional, device)

    return state, sample


def _served(state: dict, class_index: int | None) -> list[int]:
    return list(range(len(state["classes"]))) if class_index is None else [class_index]
