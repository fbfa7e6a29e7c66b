"""The stages as the `masksynth` command and `experiment` run them.

Each lower layer does one job and knows nothing above it; here a stage is put together
with what belongs around it: quality metrics after GAN training, the privacy filter around
sampling. The command and the experiment call these, so both run a stage the same way.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from masksynth.config import TEST, GanConfig
from masksynth.device import pick_device
from masksynth.gan import sample as sampling
from masksynth.gan import train as training
from masksynth.gan.load import evaluation_sampler
from masksynth.metrics.gan_quality import generator_quality
from masksynth.privacy.release_filter import release_screen


def train_gan(
    prep_dir: str | Path, run_dir: str | Path, config: GanConfig, resume: bool = False
) -> dict:
    """`gan.train.train_gan`, with KID/FID/PRDC on val during training (--metrics-every) and
    on test at the end (--final-metrics)."""
    quality = partial(generator_quality, Path(prep_dir))
    return training.train_gan(prep_dir, run_dir, config, resume, quality=quality)


def gan_test_metrics(prep_dir: str | Path, run_dir: str | Path, n: int, device: str) -> dict:
    """A trained run's final quality metrics (`train_gan`'s, on the test split) measured
    again from its checkpoint, on n fakes per class."""
    torch_device = pick_device(device)
    return generator_quality(
        Path(prep_dir), TEST, n, evaluation_sampler(run_dir, torch_device), torch_device
    )


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
) -> dict:
    """`gan.sample.sample`; with `privacy_filter`, through the release filter calibrated on
    the GAN's prepared folder (`prep_dir`, default: the one its gan.json names) with the
    face `matchers` (default: the audit's)."""
    screen = release_screen(run_dir, prep_dir, max_candidates, matchers) if privacy_filter else None
    return sampling.sample(run_dir, out_dir, n_per_class, seed, device, screen, max_candidates)
