"""Per-image features of a prepared split, cached row by row beside the uint8 cache.

Inception passes cost ~0.2 s per image on two CPU cores, so a stage that needs only some
rows (the privacy audit draws subsets) computes only those, and every later stage reuses
whatever any earlier one computed. The file holds the features and a `done` mask, keyed by
the prepared folder's fingerprint, so a re-prepared folder never sees stale rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from masksynth.data import load_split
from masksynth.fileio import atomic_open, read_json

log = logging.getLogger(__name__)


def cache_file(prep_dir: Path, split: str, space: str, size: int) -> Path:
    fingerprint = read_json(Path(prep_dir) / "prepare.json")["fingerprint"]
    return Path(prep_dir) / "features" / f"{space}_{split}_{size}px_{fingerprint}.npz"


def split_features(
    prep_dir: str | Path,
    split: str,
    space: str,
    compute: Callable[[torch.Tensor], np.ndarray],
    rows: np.ndarray | None = None,
    size: int = 64,
) -> np.ndarray:
    """Features of `rows` (default: all) of a split; missing rows are computed and stored."""
    prep_dir = Path(prep_dir)
    data = load_split(prep_dir, split, size)
    rows = np.arange(len(data.labels)) if rows is None else np.asarray(rows, dtype=np.int64)
    path = cache_file(prep_dir, split, space, size)
    features, done = None, np.zeros(len(data.labels), dtype=bool)
    if path.is_file():
        with np.load(path) as stored:
            features = stored["features"]
            # files written before the mask existed hold every row
            done = stored["done"] if "done" in stored.files else np.ones(len(features), bool)
    missing = rows[~done[rows]] if len(rows) else rows
    if len(missing):
        log.info("computing %s features of %d %s images (cached)", space, len(missing), split)
        new = np.asarray(compute(data.images[torch.from_numpy(missing)]), dtype=np.float32)
        if features is None:
            features = np.full((len(data.labels), new.shape[1]), np.nan, dtype=np.float32)
        features[missing] = new
        done[missing] = True
        with atomic_open(path, "wb") as handle:
            np.savez(handle, features=features, done=done)
    if features is None:  # no rows asked for and nothing cached
        return np.zeros((0, 0), dtype=np.float32)
    return features[rows]
