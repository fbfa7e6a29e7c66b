"""Synthetic ImageFolders (from `sample`) as uint8 tensors, for training and quality metrics.

A folder written by `sample` is exactly the files its manifest.csv lists: any other file in
it is never read. A folder without a manifest (synthetic images from elsewhere) is read
whole. All images of a set must share one size and colour mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from masksynth.errors import MasksynthError
from masksynth.fileio import read_csv, read_json
from masksynth.provenance import digest

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MANIFEST = "manifest.csv"
SAMPLE_RECORD = "sample.json"


def listed_files(folder: Path) -> list[tuple[str, str]]:
    """(relative file, label) of every image the folder's manifest lists; all must exist."""
    folder = Path(folder)
    try:
        rows = read_csv(folder / MANIFEST)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise MasksynthError(f"{folder / MANIFEST} cannot be read: {error}") from None
    if rows and not {"file", "label"} <= set(rows[0]):
        raise MasksynthError(f"{folder / MANIFEST} has no 'file' and 'label' columns")
    root = folder.resolve()
    outside = [r["file"] for r in rows if not (root / r["file"]).resolve().is_relative_to(root)]
    if outside:
        raise MasksynthError(
            f"{folder / MANIFEST} lists {len(outside)} file(s) outside the folder, "
            f"e.g. {outside[0]!r}: not read"
        )
    missing = [r["file"] for r in rows if not (folder / r["file"]).is_file()]
    if missing:
        raise MasksynthError(
            f"{folder} is incomplete: {len(missing)} file(s) its manifest lists are missing, "
            f"e.g. {missing[0]}"
        )
    return [(r["file"], r["label"]) for r in rows]


def synthetic_files(
    folder: Path, class_names: list[str], per_class: int | None = None
) -> list[tuple[Path, int]]:
    """(file, class index) of every image of the set, per class in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MasksynthError(f"synthetic folder {folder} does not exist")
    if (folder / MANIFEST).is_file():
        listed = listed_files(folder)
        unknown = sorted({label for _, label in listed} - set(class_names))
        by_class = {name: sorted(f for f, label in listed if label == name) for name in class_names}
    else:
        log.debug("%s has no %s: reading every image in its class folders", folder, MANIFEST)
        unknown = [d.name for d in folder.iterdir() if d.is_dir() and d.name not in class_names]
        by_class = {
            name: sorted(
                str(p.relative_to(folder))
                for p in (folder / name).glob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES
            )
            for name in class_names
        }
    if unknown:
        raise MasksynthError(
            f"{folder} has classes {unknown} that the real data lacks (classes: {class_names})"
        )
    return [
        (folder / rel, k)
        for k, name in enumerate(class_names)
        for rel in by_class[name][:per_class]
    ]


def synthetic_id(folder: Path) -> str:
    """What identifies a synthetic set: its sample id, or a digest of its file listing."""
    folder = Path(folder)
    record = folder / SAMPLE_RECORD
    if record.is_file() and (folder / MANIFEST).is_file():
        sample_id = read_json(record).get("sample_id")
        if sample_id:
            return sample_id
    listing = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        listing.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return digest(listing)


def load_synthetic(
    folder: Path, class_names: list[str], size: int, per_class: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, size, size) images and labels of the set, per class in name order."""
    images, labels, first = [], [], None
    for path, k in synthetic_files(folder, class_names, per_class):
        try:
            with Image.open(path) as image:
                shape = (image.size, image.mode)
                pixels = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        except (OSError, ValueError) as error:
            raise MasksynthError(f"{path} is not a readable image: {error}") from None
        if first is None:
            first = (path, shape)
        elif shape != first[1]:
            raise MasksynthError(
                f"{path} is {_describe(shape)} but {first[0].name} is {_describe(first[1])}: "
                "a synthetic set must hold images of one size and colour mode"
            )
        if shape[0][0] != shape[0][1]:
            raise MasksynthError(f"{path} is {_describe(shape)}: synthetic images must be square")
        images.append(pixels)
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


def _describe(shape: tuple) -> str:
    (width, height), mode = shape
    return f"{width}x{height} {mode}"
