"""`masksynth evaluate` speed on a raw photo folder, against a plain ImageFolder evaluation.

masksynth's evaluate decodes and validates each photo, face-detects and crops it exactly as
prepare did for training, then classifies and writes a sheet of the misclassified images.
The baseline is the tutorial way: ImageFolder with Resize + CenterCrop + Normalize in 2
DataLoader workers and the model's forward pass, no face detection. Both are timed end to
end (model load included), on the first --per-class files of each class linked into a
temporary ImageFolder. Prints one JSON line; medians over --repeats.

    python benchmarks/evaluate_speed.py --data ../shared/datasets/face-mask --per-class 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import result
from prepare_speed import link_subset
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

from masksynth.classify.evaluate import evaluate
from masksynth.classify.train import train_classifier
from masksynth.config import classifier_config
from masksynth.device import pick_device

DEFAULT_CHECKPOINTS = "runs/exp-audit/classifiers"


def find_checkpoint(given: Path | None) -> Path | None:
    """--checkpoint, else the first classifier.pt of the audited experiment, else None."""
    if given is not None:
        return given
    found = sorted(Path(DEFAULT_CHECKPOINTS).glob("**/classifier.pt"))
    real = [p for p in found if "real" in p.parts]  # trained on real photos only
    return (real or found or [None])[0]


def plain_evaluate(checkpoint: Path, data_dir: Path, device: torch.device) -> float:
    """The accuracy of the checkpoint's model on whole photos (ImageFolder's classes are the
    sorted folder names, as masksynth's are)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    size = state["size"]
    tf = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(state["mean"], state["std"]),
        ]
    )
    dataset = datasets.ImageFolder(str(data_dir), transform=tf)
    loader = DataLoader(dataset, batch_size=64, num_workers=2)
    model = models.resnet18(num_classes=len(state["class_names"]))
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    return correct / len(dataset)


def timed(fn) -> tuple[float, float]:
    """(seconds, accuracy) of one evaluation."""
    started = time.perf_counter()
    accuracy = fn()
    return time.perf_counter() - started, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"), help="to train one")
    parser.add_argument("--checkpoint", type=Path, help=f"default: under {DEFAULT_CHECKPOINTS}")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as scratch:
        scratch = Path(scratch)
        raw, checkpoint = scratch / "raw", find_checkpoint(args.checkpoint)
        if checkpoint is None:  # one epoch: the speed does not depend on the weights
            config = classifier_config("paper", epochs=1, device=str(device))
            summary = train_classifier(args.prep, scratch / "clf", config)
            checkpoint = Path(summary["checkpoint"])
        n = link_subset(args.data, args.per_class, raw)

        def ours_run() -> float:
            metrics, _ = evaluate(checkpoint, raw, sheet=scratch / "sheet.png", device=str(device))
            return metrics["accuracy"]["value"]

        ours, plain = [], []
        for _ in range(args.repeats):
            seconds, plain_accuracy = timed(lambda: plain_evaluate(checkpoint, raw, device))
            plain.append(n / seconds)
            seconds, accuracy = timed(ours_run)
            ours.append(n / seconds)
        checkpoint = "trained here" if checkpoint.is_relative_to(scratch) else str(checkpoint)
    record = result(
        "evaluate_raw",
        "img/s",
        ours,
        plain,
        files=n,
        # face crops as in training vs. whole photos: why the plain loop is not enough
        accuracy=round(accuracy, 4),
        baseline_accuracy=round(plain_accuracy, 4),
        checkpoint=checkpoint,
        note="baseline: Resize + CenterCrop in 2 workers, no face detection or checks",
    )
    print(json.dumps(record))


if __name__ == "__main__":
    main()
