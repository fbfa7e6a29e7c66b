"""Synthetic ImageFolders (from `sample`) as uint8 tensors, for training and quality metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from masksynth.errors import MasksynthError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def synthetic_files(
    folder: Path, class_names: list[str], per_class: int | None = None
) -> list[tuple[Path, int]]:
    """(file, class index) of every image in `folder/<class>/`, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MasksynthError(f"synthetic folder {folder} does not exist")
    unknown = [d.name for d in folder.iterdir() if d.is_dir() and d.name not in class_names]
    if unknown:
        raise MasksynthError(
            f"{folder} has class folders {unknown} that the real data lacks "
            f"(classes: {class_names})"
        )
    files = []
    for k, name in enumerate(class_names):
        paths = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files += [(path, k) for path in paths[:per_class]]
    return files


def load_synthetic(
    folder: Path, class_names: list[str], size: int, per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, size, size) images and labels from `folder/<class>/*`, in name order."""
    images, labels = [], []
    for path, k in synthetic_files(folder, class_names, per_class):
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
        except (OSError, ValueError) as error:
            raise MasksynthError(f"{path} is not a readable image: {error}") from None
        labels.append(k)
    if not images:
        raise MasksynthError(f"{folder} holds no images in class folders {class_names}")
    batch = torch.from_numpy(np.stack(images))
    if batch.shape[-1] != size:
        batch = (
            F.interpolate(
                batch.float(),
                size=(size, size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            .round()
            .clamp(0, 255)
        )
        batch = batch.to(torch.uint8)
    return batch, torch.tensor(labels, dtype=torch.int64)
