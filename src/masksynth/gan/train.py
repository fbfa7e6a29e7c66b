"""The `train-gan` stage: GAN training from the uint8 cache, resumable to the exact bit.

Per-class mode trains one G/D pair per class, interleaved step by step, each over its own
class once per epoch; conditional mode trains one pair over all classes. Full-state
checkpoints are written atomically at each epoch end, every `checkpoint_minutes`, and on
Ctrl-C; `--resume` continues from the last one exactly (same data order, noise, weights).
This module sets a run up and records it; the loop is gan.loop, how a pair learns in a step
the objective's (gan.loss; gan.dp for DP-SGD on D), what the run shows the monitor's.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from masksynth.config import TEST, TRAIN, GanConfig
from masksynth.data import load_split
from masksynth.data.cache import read_prepared
from masksynth.device import resolve_precision
from masksynth.distributed import check_in_sync, setup
from masksynth.distributed import wrap as wrap_for_ranks
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_json
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint, restore_pairs, restore_rng
from masksynth.gan.diffaugment import TRANSFORMS
from masksynth.gan.loop import Quality, Trainer
from masksynth.gan.loss import LOSSES, Objective
from masksynth.gan.monitor import GRID_SIZE
from masksynth.gan.networks import (
    D_NORMS,
    DISCRIMINATORS,
    FAMILIES,
    IMAGE_SIZE,
    discriminator_kind,
)
from masksynth.gan.pair import GanPair, build_pairs
from masksynth.gan.resume import gan_inputs, resumable
from masksynth.runinfo import run_record
from masksynth.seeds import PROCESS, derive_seed

log = logging.getLogger(__name__)


def train_gan(
    prep_dir: str | Path,
    run_dir: str | Path,
    config: GanConfig,
    resume: bool = False,
    quality: Quality | None = None,
) -> dict:
    """Train (or resume) and return the run summary written to `gan.json`.

    `quality` scores the generators on a real split: on val every `metrics_every_epochs`,
    and on test at the end (`final_metrics`); without it no quality is measured.
    """
    wall_start = time.perf_counter()
    prep_dir, run_dir = Path(prep_dir), Path(run_dir)
    ckpt_file = checkpoint_path(run_dir)
    prep_fingerprint = read_prepared(prep_dir)["fingerprint"]
    state = None
    if resume:
        state = load_checkpoint(ckpt_file)
        config = resumable(run_dir, state, config, prep_fingerprint)
    elif ckpt_file.exists():
        raise MasksynthError(
            f"{run_dir} already holds a GAN run: pass --resume to continue it "
            "or choose another --out"
        )
    _validate(config)
    ranks, device = setup(config.device)
    if ranks.on and config.dp_epsilon:
        raise MasksynthError("--dp-epsilon trains in one process: run it without torchrun")
    precision = resolve_precision(config.precision, device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed)  # the same initial weights on every rank

    data = load_split(prep_dir, TRAIN, IMAGE_SIZE)
    if len(data.labels) == 0:
        raise MasksynthError(f"{prep_dir} has no training images")
    pairs = build_pairs(config, data.class_names, data.labels, device)
    for pair in pairs:
        # D is called twice (real, fake) before one backward: buffers are not re-broadcast
        # between the calls (that would change BatchNorm's statistics in place).
        pair.G_train = wrap_for_ranks(pair.G, ranks, device, broadcast_buffers=False)
        pair.D_train = wrap_for_ranks(pair.D, ranks, device, broadcast_buffers=False)
    if ranks.on:  # each rank draws its own noise and augmentations
        torch.manual_seed(derive_seed(config.seed, PROCESS, ranks.rank))
    objective = _objective(config, pairs, len(data.labels), state)

    trainer = Trainer(config, pairs, objective, data, device, precision, run_dir, ranks)
    trainer.quality, trainer.prep_fingerprint = quality, prep_fingerprint
    trainer.monitor.real = _real_faces(prep_dir, GRID_SIZE)
    if state is not None:
        restore_pairs(pairs, state, ckpt_file)
        trainer.epoch, trainer.global_step = state["epoch"], state["global_step"]
        trainer.elapsed = state["elapsed_s"]
        trainer.first_epoch_s = state.get("first_epoch_s", 0.0)
        same_budget = state["config"].get("minutes") == config.minutes
        if config.minutes and state.get("planned_epochs") and same_budget:
            # a budget run keeps the epochs it planned (another budget plans anew)
            trainer.planned_epochs, trainer.planned = state["planned_epochs"], True
        restore_rng(state, ranks)
        log.info("resuming %s at epoch %d, step %d", run_dir, trainer.epoch + 1, state["next_step"])
    meta = {
        "stage": "train-gan",
        "prep_dir": str(prep_dir.resolve()),
        "prep_fingerprint": prep_fingerprint,
        "inputs": gan_inputs(prep_fingerprint, config),
        "config": config.to_dict(),
        "classes": data.class_names,
        "device": str(device),
        "precision": precision,
        "processes": ranks.world,
        "train_images": _class_counts(data),
        **run_record(),
    }
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / ("gan.json" if state is None else "gan-resume.json"), meta)

    trainer.run(state["next_step"] if state else 0)
    check_in_sync({f"{p.name}.{n}": getattr(p, n) for p in pairs for n in ("G", "D")}, ranks)
    summary = {
        **meta,
        "epochs_done": trainer.epoch,
        "planned_epochs": trainer.planned_epochs,
        "steps": trainer.global_step,
        "train_seconds": round(trainer.elapsed, 1),
        "stopped": trainer.stop_reason,
        **({"dp": objective.record()} if config.dp_epsilon else {}),
    }
    if not ranks.main:
        return summary
    if config.class_keep < 1:  # what the run hands out, beside the epoch grids' every fake
        trainer.monitor.kept_grids(trainer.classes, trainer.sample)
    if config.final_metrics and trainer.stop_reason == "done" and quality is not None:
        summary["metrics"] = quality(TEST, config.metrics_samples, trainer.sample, device)
        write_json(run_dir / "metrics.json", summary["metrics"])
    summary["checkpoint_sha256"] = file_sha256(ckpt_file)  # what this record describes
    previous = read_json(run_dir / "gan.json")
    earlier = previous.get("total_seconds", 0.0) if state is not None else 0.0
    summary["total_seconds"] = round(earlier + time.perf_counter() - wall_start, 1)
    write_json(run_dir / "gan.json", {**previous, **summary})
    return summary


def _validate(config: GanConfig) -> None:
    if config.mode not in ("per-class", "conditional"):
        raise MasksynthError("--mode must be per-class or conditional")
    if config.batch_size < 2 or config.epochs < 1:
        raise MasksynthError("--batch-size must be >= 2 and --epochs >= 1")
    if config.seed < 0:
        raise MasksynthError("--seed must be >= 0")
    for name in filter(None, config.diffaugment.split(",")):
        if name.strip() not in TRANSFORMS:
            raise MasksynthError(
                f"unknown DiffAugment transform {name!r}: choose from {', '.join(TRANSFORMS)}"
            )
    if not 0 <= config.ema_decay < 1:
        raise MasksynthError("--ema-decay must be in [0, 1)")
    if config.ema_ramp <= 1:
        raise MasksynthError("--ema-ramp must be > 1")
    if config.family not in FAMILIES or config.loss not in LOSSES:
        raise MasksynthError(
            f"--family must be one of {', '.join(FAMILIES)} and --loss one of {', '.join(LOSSES)}"
        )
    if config.discriminator not in DISCRIMINATORS:
        raise MasksynthError(f"--discriminator must be one of {', '.join(DISCRIMINATORS)}")
    if config.d_norm not in D_NORMS:
        raise MasksynthError(f"--d-norm must be one of {', '.join(D_NORMS)}")
    if config.ac_weight < 0 or (
        config.ac_weight and (config.mode != "conditional" or discriminator_kind(config) != "dcgan")
    ):
        raise MasksynthError(
            "--ac-weight must be >= 0, and > 0 only with --mode conditional and the DCGAN "
            "discriminator (its auxiliary classifier needs classes; the quick and best presets "
            "set it: add --ac-weight 0 --no-ac-twin --class-keep 1)"
        )
    if config.ac_twin and not config.ac_weight:
        raise MasksynthError("--ac-twin adds a twin to the auxiliary classifier: set --ac-weight")
    if not 0 < config.class_keep <= 1 or (config.class_keep < 1 and not config.ac_weight):
        raise MasksynthError(
            "--class-keep must be in (0, 1], and below 1 only with --ac-weight (it keeps the "
            "fakes D's class head is surest of)"
        )
    if config.dp_epsilon and (
        config.family != "dcgan" or discriminator_kind(config) != "dcgan" or config.loss != "bce"
    ):
        raise MasksynthError("--dp-epsilon trains the paper's DCGAN with its BCE loss only")
    if config.dp_epsilon and config.minutes:
        raise MasksynthError("--dp-epsilon plans its noise from --epochs: set --minutes 0")
    if config.minutes < 0:
        raise MasksynthError("--minutes must be >= 0 (0: train --epochs)")
    if config.metrics_every_epochs < 0 or config.checkpoint_every_steps < 0:
        raise MasksynthError("--metrics-every and --checkpoint-every-steps must be >= 0 (0: off)")
    if (config.final_metrics or config.metrics_every_epochs) and config.metrics_samples < 2:
        # checked before training: the metrics come after it
        raise MasksynthError(
            "--metrics-samples must be >= 2 (FID compares two sets of at least 2 images); "
            "--no-final-metrics and --metrics-every 0 measure nothing"
        )
    if config.dp_epsilon:
        _private().check(config)


def _private():
    # imported only for --dp-epsilon: opacus takes seconds to import
    from masksynth.gan import dp

    return dp


def _objective(config: GanConfig, pairs: list[GanPair], n_train: int, state) -> Objective:
    if not config.dp_epsilon:
        return Objective(config.loss, config.ac_weight, config.ac_twin)
    objective = _private().PrivateObjective(pairs, config, n_train, state and state["dp"])
    shown = objective.record()
    log.info(
        "differential privacy on D: target epsilon %g, delta %.2g, noise multiplier %.3f, "
        "clip %g, sample rate %.4f, %d planned steps",
        config.dp_epsilon,
        objective.delta,
        shown["noise_multiplier"],
        config.dp_max_grad_norm,
        shown["sample_rate"],
        shown["planned_steps"],
    )
    return objective


def _real_faces(prep_dir: Path, n: int) -> dict[int, torch.Tensor]:
    """The first n real test faces of each class, shown below the synthetic ones in grids
    (shown only: test images never reach training)."""
    test = load_split(prep_dir, TEST, IMAGE_SIZE)
    return {k: test.images[test.labels == k][:n] for k in range(len(test.class_names))}


def _class_counts(data) -> dict[str, int]:
    counts = torch.bincount(data.labels, minlength=len(data.class_names)).tolist()
    return dict(zip(data.class_names, counts, strict=True))
