"""The `evaluate` stage: test metrics of a classifier checkpoint on real photos.

DATA_DIR may be a prepared folder (with --split) or a raw ImageFolder of photos never seen
before: those are decoded, face-cropped and resized exactly as the training data was, with
the settings stored in the checkpoint. Classes absent from the folder are allowed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masksynth.classify.checkpoint import load_classifier, predict_proba
from masksynth.classify.robustness import robustness
from masksynth.config import TEST
from masksynth.data import load_split
from masksynth.data.ingest import IngestOptions, process_files, scan_image_folder
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.metrics.calibration import expected_calibration_error, reliability
from masksynth.metrics.classification import binary_metrics, class_metrics
from masksynth.render.sheets import save_grid

log = logging.getLogger(__name__)
SHEET_LIMIT = 64


@dataclass
class Predictions:
    sources: list[str]
    y_true: np.ndarray  # class indices of the checkpoint
    y_score: np.ndarray  # P(positive class)
    images: torch.Tensor  # uint8, as the model saw them
    rejected: list[tuple[str, str]]  # raw-folder files that could not be used, with reasons


def evaluate(
    checkpoint: str | Path,
    data_dir: str | Path,
    split: str = TEST,
    sheet: str | Path | None = None,
    device: str = "auto",
    robust: bool = False,
) -> tuple[dict, Predictions]:
    """Metrics (the 8 keys of `binary_metrics`: the positive class against the rest;
    `per_class` recall and the `confusion_matrix` over every class; `calibration`; with
    `robust` the `robustness` table) and the per-image predictions."""
    torch_device = pick_device(device)
    model, meta = load_classifier(checkpoint, torch_device)
    data_dir = Path(data_dir)
    if (data_dir / "prepare.json").is_file():
        images, labels, sources, rejected = _prepared(data_dir, split, meta)
    else:
        images, labels, sources, rejected = _raw(data_dir, meta)
    if len(labels) == 0:
        raise MasksynthError(f"no usable image in {data_dir}")
    positive = meta["class_names"].index(meta["positive_class"])
    probs = predict_proba(model, images, meta, torch_device)
    scores = probs[:, positive].numpy()
    metrics = {
        **binary_metrics(labels, scores, positive),
        **class_metrics(labels, probs.numpy(), meta["class_names"]),
        "calibration": {
            "temperature": meta.get("temperature", 1.0),  # fitted on val by train-classifier
            "ece": expected_calibration_error(probs, labels),
            "reliability": reliability(probs, labels),
        },
    }
    if robust:
        clean = metrics["balanced_accuracy"]
        metrics["robustness"] = robustness(model, meta, images, labels, torch_device, clean)
    predictions = Predictions(sources, labels, scores, images, rejected)
    if sheet is not None:
        write_misclassified_sheet(predictions, positive, Path(sheet))
    return metrics, predictions


def _prepared(prep_dir: Path, split: str, meta: dict):
    data = load_split(prep_dir, split, meta["size"])
    mapping = _class_mapping(data.class_names, meta["class_names"], prep_dir)
    labels = np.array([mapping[int(k)] for k in data.labels], dtype=np.int64)
    return data.images, labels, data.sources, []


def _raw(data_dir: Path, meta: dict):
    files, classes, _ = scan_image_folder(data_dir, min_classes=1)
    mapping = _class_mapping(classes, meta["class_names"], data_dir)
    settings = meta["prepare"]
    options = IngestOptions(
        (meta["size"],),
        settings["face_crop"],
        settings["face_margin"],
        settings["face_threshold"],
        settings["min_side"],
        settings["max_pixels"],
        tuple(settings["alpha_background"]),
    )
    rejected = []
    todo = sorted((s for s in files if not s.skip_reason), key=lambda s: s.relpath)
    label_of = {s.relpath: mapping[classes.index(s.label)] for s in todo}
    done = {}
    # In this process: a spawned pool (as `prepare` uses) was slower here on 600 photos,
    # 44 against 67 img/s on 2 cores, because each worker imports torch and OpenCV first.
    for record, arrays in process_files(data_dir, todo, options, workers=1):
        if arrays is None:
            rejected.append((record["source"], record["reason"]))
            log.warning("skipped %s: %s", record["source"], record["reason"])
        else:
            done[record["source"]] = arrays[meta["size"]]
    sources = [s.relpath for s in todo if s.relpath in done]  # a fixed order, whatever came first
    images = [done[rel] for rel in sources]
    labels = [label_of[rel] for rel in sources]
    stacked = (
        torch.from_numpy(np.stack(images))
        if images
        else torch.zeros(0, 3, meta["size"], meta["size"], dtype=torch.uint8)
    )
    return stacked, np.array(labels, dtype=np.int64), sources, rejected


def _class_mapping(found: list[str], known: list[str], where: Path) -> dict[int, int]:
    unknown = [name for name in found if name not in known]
    if unknown:
        raise MasksynthError(
            f"{where} has class folders {unknown} that the classifier does not "
            f"know (it knows {known})"
        )
    return {k: known.index(name) for k, name in enumerate(found)}


def write_misclassified_sheet(predictions: Predictions, positive: int, path: Path) -> Path | None:
    predicted = (predictions.y_score >= 0.5).astype(np.int64)
    is_positive = predictions.y_true == positive
    wrong = np.flatnonzero(is_positive != (predicted == 1))
    if len(wrong) == 0:
        return None
    return save_grid(predictions.images[torch.from_numpy(wrong[:SHEET_LIMIT])], path, 8)
