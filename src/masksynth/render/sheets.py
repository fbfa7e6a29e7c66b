"""Contact sheets: many small images in one PNG, so a person can look at a data set at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from masksynth.fileio import atomic_open


def save_grid(images: np.ndarray | torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    """Write (N, 3, H, W) uint8 images as one PNG grid, atomically."""
    tensor = torch.as_tensor(np.asarray(images))
    if tensor.ndim != 4 or tensor.shape[0] == 0:
        raise ValueError("save_grid needs a non-empty (N, 3, H, W) batch")
    grid = make_grid(tensor, nrow=columns, padding=2, pad_value=255)
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(handle, format="PNG")
    return path


def beside_real(synthetic: torch.Tensor, real: torch.Tensor | None, columns: int = 8):
    """uint8 synthetic faces, a blank (white) row, then as many real faces of the class."""
    if real is None or len(real) == 0:
        return synthetic
    blank = torch.full((columns, *synthetic.shape[1:]), 255, dtype=torch.uint8)
    return torch.cat([synthetic, blank, real[: len(synthetic)]])
