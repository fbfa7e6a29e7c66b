"""The `train-classifier` stage: the paper's ResNet18 with classic augmentation.

Trains on the real train split, optionally with synthetic images added (scenario 2) or
on synthetic images alone (the train-on-synthetic / test-on-real control). The model is
selected on the real validation split (best balanced accuracy, then lowest loss); the
test split is never looked at here.
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from masksynth.classify.augment import Augment
from masksynth.classify.calibrate import calibrate_checkpoint
from masksynth.classify.checkpoint import normalise, predict_proba, save_classifier
from masksynth.classify.degrade import Degrade
from masksynth.classify.models import IMAGENET_MEAN, IMAGENET_STD, build_model
from masksynth.config import TRAIN, VAL, ClassifierConfig
from masksynth.data import load_split
from masksynth.data.cache import read_prepared
from masksynth.data.synthetic import load_synthetic, synthetic_files, synthetic_id
from masksynth.device import CLASSIFIER_MEMORY_FORMAT, autocast, resolve_precision
from masksynth.distributed import average_buffers, check_in_sync, mean_over_ranks, setup, wrap
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_csv, write_json
from masksynth.metrics.classification import binary_metrics
from masksynth.progress import progress
from masksynth.provenance import changes
from masksynth.runinfo import run_record
from masksynth.seeds import CLASSIFIER_DEGRADE, CLASSIFIER_ORDER, PROCESS, derive_seed

log = logging.getLogger(__name__)
CHECKPOINT = "classifier.pt"
TRAINING_SET = "training_set.csv"
PREPARE_KEYS = (
    "face_crop",
    "face_margin",
    "face_threshold",
    "min_side",
    "max_pixels",
    "alpha_background",
)


def train_classifier(
    prep_dir: str | Path,
    out_dir: str | Path,
    config: ClassifierConfig,
    synthetic_dir: str | Path | None = None,
    synthetic_only: bool = False,
) -> dict:
    """Train, select on val, write `classifier.pt` and `train.json`; returns the summary."""
    prep_dir, out_dir = Path(prep_dir), Path(out_dir)
    if synthetic_only and synthetic_dir is None:
        raise MasksynthError("training on synthetic images only needs --synthetic")
    if not 0 <= config.degrade <= 1:
        raise MasksynthError(f"--degrade must be a probability in [0, 1] (got {config.degrade})")
    prep_meta = read_prepared(prep_dir)
    inputs = classifier_inputs(prep_meta["fingerprint"], config, synthetic_dir, synthetic_only)
    done = out_dir / "train.json"
    if done.is_file():
        why = changes(read_json(done).get("inputs"), inputs)
        if not why and (out_dir / CHECKPOINT).is_file():
            log.info("%s is already trained from these inputs: reusing it", out_dir)
            return {**read_json(done), "reused": True}
        log.info("%s: training anew (%s)", out_dir, "; ".join(why) or "checkpoint missing")
    ranks, device = setup(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    real = load_split(prep_dir, TRAIN, config.size)
    val = load_split(prep_dir, VAL, config.size)
    classes = real.class_names
    positive = classes.index(prep_meta["positive_class"])
    parts = [] if synthetic_only else [(real.images, real.labels)]
    used = (
        []
        if synthetic_only
        else [
            ("real", s, classes[k]) for s, k in zip(real.sources, real.labels.tolist(), strict=True)
        ]
    )
    if synthetic_dir is not None:
        parts.append(load_synthetic(Path(synthetic_dir), classes, config.size))
        used += [
            ("synthetic", str(path.relative_to(synthetic_dir)), classes[k])
            for path, k in synthetic_files(Path(synthetic_dir), classes)
        ]
    images = torch.cat([p[0] for p in parts]).to(device)
    labels = torch.cat([p[1] for p in parts]).to(device)
    composition = {
        "real": _counts(real.labels, classes) if not synthetic_only else _counts([], classes),
        "synthetic": _counts(parts[-1][1], classes) if synthetic_dir else _counts([], classes),
    }
    if len(val.labels) == 0:
        raise MasksynthError(f"{prep_dir} has an empty val split: model selection needs one")

    model = build_model(config.arch, len(classes), config.weights)
    model = model.to(device, memory_format=CLASSIFIER_MEMORY_FORMAT)
    trained = wrap(model, ranks, device)  # DDP under torchrun (BatchNorm statistics of rank 0)
    if ranks.on:  # each rank draws its own augmentations
        torch.manual_seed(derive_seed(config.seed, PROCESS, ranks.rank))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    weight = _class_weights(labels, len(classes), config.class_weights, device)
    augment = Augment() if config.augment else None
    degrade = Degrade(p=config.degrade) if config.degrade else None
    meta = {
        "arch": config.arch,
        "class_names": classes,
        "positive_class": prep_meta["positive_class"],
        "size": config.size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "prepare": {k: prep_meta["config"][k] for k in PREPARE_KEYS},
        "config": config.to_dict(),
        "synthetic_dir": str(synthetic_dir) if synthetic_dir else None,
        "synthetic_only": synthetic_only,
    }
    history_path = out_dir / "history.jsonl"
    if ranks.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)  # a half-trained folder never passes for a finished one
        history_path.unlink(missing_ok=True)
        # every training image by name, so leakage into any test set can be checked
        write_csv(
            out_dir / TRAINING_SET,
            ("origin", "source", "label"),
            [{"origin": o, "source": src, "label": label} for o, src, label in used],
        )
    best, started = None, time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(
            len(labels),
            generator=torch.Generator().manual_seed(
                derive_seed(config.seed, CLASSIFIER_ORDER, epoch)
            ),
        ).to(device)
        model.train()
        # the degradations' own stream: per (seed, epoch, process), so a rerun matches
        degrade_draws = torch.Generator().manual_seed(
            derive_seed(config.seed, CLASSIFIER_DEGRADE, epoch, ranks.rank)
        )
        sums = {"loss": 0.0, "correct": 0, "n": 0}
        bar = progress(
            steps_per_epoch,
            f"classifier epoch {epoch + 1}/{config.epochs}",
            "step",
            quiet=not ranks.main,
        )
        for step in range(steps_per_epoch):
            bar.update()
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            if len(batch) < ranks.world:  # a share for every rank, or none steps
                continue
            batch = ranks.shard(batch)
            loss, logits = train_step(
                trained,
                optimizer,
                images[batch],
                labels[batch],
                augment,
                weight,
                precision,
                partial(degrade, generator=degrade_draws) if degrade else None,
            )
            schedule.step()
            sums["loss"] += loss.item() * len(batch)
            sums["correct"] += int((logits.argmax(1) == labels[batch]).sum())
            sums["n"] += len(batch)
        bar.close()
        sums = mean_over_ranks(sums, ranks, device)
        average_buffers([model], ranks)  # validation uses the statistics of all the shards
        if not ranks.main:  # rank 0 alone selects and writes; the others train on
            continue
        model.eval()
        probs = predict_proba(model, val.images, meta, device)
        val_loss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), val.labels))
        scores = binary_metrics(val.labels.numpy(), probs[:, positive].numpy(), positive)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(sums["loss"] / sums["n"]),
            "train_accuracy": float(sums["correct"] / sums["n"]),
            "val_loss": val_loss,
            "val_accuracy": scores["accuracy"]["value"],
            "val_balanced_accuracy": scores["balanced_accuracy"],
            "lr": schedule.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
        }
        with open(history_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        key = (scores["balanced_accuracy"] or 0.0, -val_loss)
        if best is None or key > best[0]:
            best = (key, epoch + 1, scores)
            save_classifier(
                out_dir / CHECKPOINT,
                model,
                {**meta, "best_epoch": epoch + 1, "val_metrics": scores},
            )
        log.info(
            "epoch %d: train loss %.3f, val balanced accuracy %.4f%s",
            epoch + 1,
            record["train_loss"],
            record["val_balanced_accuracy"] or float("nan"),
            " (best)" if best[1] == epoch + 1 else "",
        )
    check_in_sync({"model": model}, ranks)
    if not ranks.main:
        return {"stage": "train-classifier", "rank": ranks.rank, "processes": ranks.world}
    calibration = calibrate_checkpoint(out_dir / CHECKPOINT, val.images, val.labels, device)
    log.info(
        "temperature %.3f fitted on val: ECE %.4f -> %.4f",
        calibration["temperature"],
        calibration["ece_before"],
        calibration["ece_after"],
    )
    summary = {
        "stage": "train-classifier",
        "prep_dir": str(prep_dir.resolve()),
        "prep_fingerprint": prep_meta["fingerprint"],
        "inputs": inputs,
        "config": config.to_dict(),
        "synthetic_dir": str(synthetic_dir) if synthetic_dir else None,
        "synthetic_only": synthetic_only,
        "composition": composition,
        "device": str(device),
        "processes": ranks.world,
        "precision": precision,
        "best_epoch": best[1],
        "val_metrics": best[2],
        "calibration": calibration,
        "train_seconds": round(time.perf_counter() - started, 1),
        "checkpoint": CHECKPOINT,
        "training_set": TRAINING_SET,
        **run_record(),
    }
    write_json(done, summary)
    return summary


def classifier_inputs(
    prep_fingerprint: str,
    config: ClassifierConfig,
    synthetic_dir: str | Path | None,
    synthetic_only: bool,
) -> dict:
    """What a classifier is built from (see provenance): data, split, synthetic set, recipe."""
    weights = Path(config.weights)
    return {
        "prepared": prep_fingerprint,
        "synthetic": synthetic_id(Path(synthetic_dir)) if synthetic_dir else None,
        "synthetic_only": synthetic_only,
        "config": {k: v for k, v in config.to_dict().items() if k != "device"},
        "degradations": list(Degrade.KINDS) if config.degrade else None,
        # a state-dict file by content: another file under the same name trains anew
        "weights_sha256": file_sha256(weights) if weights.is_file() else None,
    }


def train_step(model, optimizer, images, labels, augment, weight, precision: str, degrade=None):
    """One optimiser step on a uint8 batch (augmented, degraded and normalised here, on its
    device); `augment` and `degrade` map a [0, 1] batch to another, or are None."""
    x = images.float() / 255.0
    if augment is not None:
        x = augment(x)
    if degrade is not None:
        x = degrade(x)
    x = normalise(x, IMAGENET_MEAN, IMAGENET_STD)
    with autocast(x.device, precision):
        logits = model(x).float()
    loss = F.cross_entropy(logits, labels, weight=weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def _counts(labels, classes: list[str]) -> dict[str, int]:
    values = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels, dtype=np.int64)
    counts = np.bincount(values, minlength=len(classes)) if len(values) else [0] * len(classes)
    return {name: int(counts[k]) for k, name in enumerate(classes)}


def _class_weights(
    labels: torch.Tensor, n_classes: int, mode: str, device: torch.device
) -> torch.Tensor | None:
    if mode == "none":
        return None
    if mode != "balanced":
        raise MasksynthError("--class-weights must be none or balanced")
    counts = torch.bincount(labels.cpu(), minlength=n_classes).float().clamp_min(1)
    return (counts.sum() / (n_classes * counts)).to(device)
