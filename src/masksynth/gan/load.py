"""A trained run's networks, from its checkpoint: what every consumer of a GAN loads.

`sample`, the training grids' readers, the quality metrics and the privacy audit all go
through these two functions, so a checkpoint is read (safely, weights only) one way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from masksynth.config import GanConfig
from masksynth.errors import MasksynthError
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.generate import evaluation_images
from masksynth.gan.networks import Discriminator, Generator, build_discriminator, build_generator
from masksynth.gan.select import ClassSelection, class_selection
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
    run_dir: str | Path, device: torch.device | str = "cpu", state: dict | None = None
) -> tuple[GanConfig, dict[int, tuple[Discriminator, bool]]]:
    """The run's config and, per class index, (trained D, conditional?); `state`: its
    checkpoint already read (e.g. by load_generators), so it is not read again."""
    path = checkpoint_path(Path(run_dir))
    state = load_checkpoint(path) if state is None else state
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
    run_dir: str | Path, device: torch.device, class_keep: float | None = None
) -> tuple[dict, Callable[[int, int], torch.Tensor]]:
    """The checkpoint state and `sample(class index, n)`: n uint8 images of a class on the
    evaluation latents, from the generator the run samples with and through its class
    selection (`class_keep`, default the run's): what its training's quality metrics were
    computed on, and what `sample` hands out."""
    state, generators = load_generators(run_dir, device)
    selection = load_selection(run_dir, state, generators, device, class_keep)
    z_dim = GanConfig.from_dict(state["config"]).z_dim
    kept = None if selection is None else selection.kept

    def sample(class_index: int, n: int) -> torch.Tensor:
        G, conditional, _ = generators[class_index]
        return evaluation_images(G, class_index, n, z_dim, conditional, device, kept)

    return state, sample


def load_selection(
    run_dir: str | Path,
    state: dict,
    generators: dict[int, tuple[Generator, bool, str]],
    device: torch.device,
    class_keep: float | None = None,
) -> ClassSelection | None:
    """The run's class selection (gan.select) with `class_keep` (default: the run's config's),
    calibrated on its generators; None when it keeps every fake."""
    config = GanConfig.from_dict(state["config"])
    keep = share_kept(state, class_keep)
    if not 0 < keep <= 1:
        raise MasksynthError(f"--class-keep must be in (0, 1], not {keep}")
    if keep < 1 and not config.ac_weight:
        raise MasksynthError(
            f"{run_dir}: --class-keep needs a discriminator with a class head (--ac-weight)"
        )
    if keep >= 1:
        return None
    _, discriminators = load_discriminators(run_dir, device, state)
    pairs = {
        k: (G, discriminators[k][0], conditional) for k, (G, conditional, _) in generators.items()
    }
    return class_selection(pairs, keep, config.z_dim, device)


def share_kept(state: dict, class_keep: float | None = None) -> float:
    """The share of fakes a run hands out: `class_keep`, or its config's when None."""
    return GanConfig.from_dict(state["config"]).class_keep if class_keep is None else class_keep


def _served(state: dict, class_index: int | None) -> list[int]:
    return list(range(len(state["classes"]))) if class_index is None else [class_index]
