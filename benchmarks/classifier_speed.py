"""Classifier training speed: masksynth's step against the usual tutorial loop, in one run.

Both train --arch (ResNet18, the paper's, or EfficientNet-lite0, train-classifier's default;
2 classes, batch 64, AdamW) with the paper's classic augmentation at --size px. The baseline
is the tutorial way: ImageFolder decoding the raw photos in 2 DataLoader workers with
torchvision's PIL transforms, fp32, NCHW, eager. masksynth trains from the prepared uint8
cache, channels_last, in its precision, and augments whole batches on the device
(`train_step`).
`compute_only` is masksynth's step on a random batch already in memory: no data cost, so
`ceiling_ratio` is the most any input pipeline could gain over the baseline.
`channels_last_gain` is what masksynth's memory layout buys: compute_only against the same
step in the default layout, timed in turn within each repeat (a 2-core VM drifts by 20 %
between runs) and the median of those ratios. Prints one JSON line; medians over --repeats.

    python benchmarks/classifier_speed.py --data ../shared/datasets/face-mask --prep runs/prep
    python benchmarks/classifier_speed.py --arch efficientnet_lite0 --size 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import batches, result
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from masksynth.classify import checkpoint
from masksynth.classify.augment import Augment
from masksynth.classify.models import ARCHS, IMAGENET_MEAN, IMAGENET_STD, build_model
from masksynth.classify.train import train_step
from masksynth.config import PrepareConfig
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.device import (
    CLASSIFIER_MEMORY_FORMAT,
    cpu_has_native_bf16,
    pick_device,
    resolve_precision,
)

BATCH = 64
DEFAULT_LAYOUT = torch.contiguous_format


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(data_dir: Path, arch: str, size: int, steps: int, device: torch.device) -> float:
    """img/s of the tutorial loop, decoding and PIL augmentation included."""
    tf = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.RandomAffine(15, translate=(0.1, 0.1), scale=(0.85, 1.15)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(data_dir), transform=tf),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
    )
    model = build_model(arch, 2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    done, started = 0, None
    for step, (x, y) in enumerate(batches(loader, steps + 1)):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:  # the first batch pays worker start-up: leave it out
            _sync(device)
            started = time.perf_counter()
        else:
            done += len(x)
    _sync(device)
    return done / (time.perf_counter() - started)


def _timed_steps(
    get_batch, arch: str, steps: int, device: torch.device, precision: str, layout=None
) -> float:
    """img/s of masksynth's train_step; get_batch(k) gives step k's (uint8 images, labels),
    and is called inside the timed part. Step 0 warms up and is not timed. `layout`: another
    memory layout than masksynth's, for the model and train_step's input alike."""
    layout = layout or CLASSIFIER_MEMORY_FORMAT
    checkpoint.CLASSIFIER_MEMORY_FORMAT = layout  # what classify.checkpoint.normalise gives
    model = build_model(arch, 2).to(device, memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    augment = Augment()
    for k in range(steps + 1):
        if k == 1:
            _sync(device)
            started = time.perf_counter()
        images, labels = get_batch(k)
        train_step(model, optimizer, images, labels, augment, None, precision)
    _sync(device)
    checkpoint.CLASSIFIER_MEMORY_FORMAT = CLASSIFIER_MEMORY_FORMAT
    return steps * BATCH / (time.perf_counter() - started)


def masksynth_loop(
    prep_dir: Path, arch: str, size: int, steps: int, device: torch.device, precision: str
) -> float:
    """img/s of masksynth's training step on the cached uint8 images (batch gather included,
    as train_classifier does it)."""
    data = load_split(prep_dir, "train", size)
    images, labels = data.images.to(device), data.labels.to(device)
    generator = torch.Generator().manual_seed(0)
    picks = [
        torch.randperm(len(labels), generator=generator)[:BATCH].to(device)
        for _ in range(steps + 1)
    ]
    return _timed_steps(
        lambda k: (images[picks[k]], labels[picks[k]]), arch, steps, device, precision
    )


def compute_only(
    arch: str, size: int, steps: int, device: torch.device, precision: str, layout=None
) -> float:
    """img/s of the same step on one random uint8 batch already in memory: no data cost."""
    images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (BATCH,), device=device)
    return _timed_steps(lambda k: (images, labels), arch, steps, device, precision, layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"))
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument("--size", type=int, default=64, choices=(64, 128))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    if not (args.prep / "prepare.json").is_file():
        prepare(args.data, args.prep, PrepareConfig(sizes=(64, 128)))
    precision = resolve_precision("auto", device)
    ours, plain, compute, default_layout = [], [], [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(args.data, args.arch, args.size, args.steps, device))
        ours.append(masksynth_loop(args.prep, args.arch, args.size, args.steps, device, precision))
        compute.append(compute_only(args.arch, args.size, args.steps, device, precision))
        default_layout.append(
            compute_only(args.arch, args.size, args.steps, device, precision, DEFAULT_LAYOUT)
        )
    record = result(
        # ResNet18 keeps the records' old name
        f"classifier_train_{device.type}_{'' if args.arch == 'resnet18' else args.arch + '_'}"
        f"{args.size}",
        "img/s",
        ours,
        plain,
        compute_only=compute,
        precision=precision,
        cpu_native_bf16=cpu_has_native_bf16(),
        arch=args.arch,
        channels_last_gain=round(
            statistics.median(c / d for c, d in zip(compute, default_layout, strict=True)), 2
        ),
        size=args.size,
        batch=BATCH,
        steps=args.steps,
    )
    print(json.dumps(record))


if __name__ == "__main__":
    main()
