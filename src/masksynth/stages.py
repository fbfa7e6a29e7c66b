"""The stages as the `masksynth` command and `experiment` run them.

Each lower layer does one job and knows nothing above it; here a stage is put together
with what belongs around it: quality metrics after GAN training, the privacy filter around
sampling. The command and the experiment call these, so both run a stage the same way.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from masksynth.config import TEST, GanConfig
from masksynth.data.cache import read_prepared
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.gan import sample as sampling
from masksynth.gan import train as training
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.load import evaluation_sampler, share_kept
from masksynth.metrics.gan_quality import fakes_metrics, gan_metrics, generator_quality
from masksynth.privacy.release_filter import release_screen

log = logging.getLogger(__name__)


def train_gan(
    prep_dir: str | Path, run_dir: str | Path, config: GanConfig, resume: bool = False
) -> dict:
    """`gan.train.train_gan`, with KID/FID/PRDC on val during training (--metrics-every) and
    on test at the end (--final-metrics)."""
    quality = partial(generator_quality, Path(prep_dir))
    return training.train_gan(prep_dir, run_dir, config, resume, quality=quality)


def gan_test_metrics(
    prep_dir: str | Path, run_dir: str | Path, n: int, device: str, class_keep: float | None = None
) -> dict:
    """A trained run's final quality metrics (`train_gan`'s, on the test split) measured
    again from its checkpoint, on n fakes per class (through the class selection
    `class_keep`, default the run's)."""
    torch_device = pick_device(device)
    _, sample_class = evaluation_sampler(run_dir, torch_device, class_keep)
    return generator_quality(Path(prep_dir), TEST, n, sample_class, torch_device)


def quality_metrics(
    source: str | Path,
    prep_dir: str | Path,
    split: str = TEST,
    device: str = "auto",
    reference: str | None = None,
    n: int | None = None,
    class_keep: float | None = None,
) -> dict:
    """`gan-metrics`: the scores of a synthetic ImageFolder, or of a `train-gan` run's
    generator on its evaluation latents (n per class; default: the run's metrics_samples),
    the fakes its training's own quality metrics were computed on."""
    torch_device = pick_device(device)
    if not checkpoint_path(Path(source)).is_file():
        given = [o for o, v in (("--fakes", n), ("--class-keep", class_keep)) if v is not None]
        if given:
            raise MasksynthError(
                f"{source}: {' and '.join(given)} needs a train-gan run folder, not images"
            )
        return gan_metrics(source, prep_dir, split, torch_device, reference)
    state, sample_class = evaluation_sampler(source, torch_device, class_keep)
    prepared = read_prepared(prep_dir)
    classes, real_classes = list(state["classes"]), list(prepared["classes"])
    if classes != real_classes:
        raise MasksynthError(
            f"{source}: the GAN makes classes {classes}, {prep_dir} holds {real_classes}"
        )
    if n is None:  # the run's own --metrics-samples
        n = GanConfig.from_dict(state["config"]).metrics_samples
        if n < 2:
            raise MasksynthError(
                f"{source} was trained with --metrics-samples {n}: give --fakes N (at least 2)"
            )
    if n < 2:
        raise MasksynthError(f"--fakes must be at least 2 per class, not {n}")
    # another prepared folder's split may hold photos this GAN trained on: said, not refused
    same_split = state.get("prep_fingerprint") == prepared["fingerprint"]
    if not same_split:
        log.warning(
            "%s was trained on another prepared folder than %s: its %s split may hold photos "
            "the GAN learned from",
            source,
            prep_dir,
            split,
        )
    keep = share_kept(state, class_keep)
    kept = "" if keep >= 1 else f", the {keep:g} of candidates D's class head is surest of"
    return {
        **fakes_metrics(
            f"{source} (its generator, {n} fakes per class on the evaluation latents{kept})",
            lambda k: sample_class(k, n),
            prep_dir,
            split,
            torch_device,
            reference,
        ),
        "n_per_class": n,
        "class_keep": keep,
        "gan_trained_on_this_prepared_folder": same_split,
    }


def sample(
    run_dir: str | Path,
    out_dir: str | Path,
    n_per_class: int,
    seed: int = 0,
    device: str = "auto",
    privacy_filter: bool = False,
    prep_dir: str | Path | None = None,
    max_candidates: int = 10,
    matchers: tuple[str, ...] | None = None,
    class_keep: float | None = None,
) -> dict:
    """`gan.sample.sample`; with `privacy_filter`, through the release filter calibrated on
    the GAN's prepared folder (`prep_dir`, default: the one its gan.json names) with the
    face `matchers` (default: the audit's), after the class selection `class_keep` (default:
    the run's)."""
    screen = release_screen(run_dir, prep_dir, max_candidates, matchers) if privacy_filter else None
    return sampling.sample(
        run_dir, out_dir, n_per_class, seed, device, screen, max_candidates, class_keep
    )
