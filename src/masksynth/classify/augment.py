"""The paper's classic augmentation (zoom, crop, rotation, flip, translation, scale) on batches.

Each image of a batch gets its own random affine transform, applied in one `grid_sample`
call on the device: no per-image Python loop, no PIL, the same code for real and
synthetic images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)  # > 1 zooms in (a random crop), < 1 zooms out
    translate: float = 0.1  # share of the side
    flip: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (N, C, H, W) -> the same shape, each image transformed independently."""
        n = x.shape[0]
        device = x.device
        angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(self.rotation_deg)
        low, high = self.scale
        zoom = low + torch.rand(n, device=device) * (high - low)
        shift = (torch.rand(n, 2, device=device) * 2 - 1) * self.translate * 2  # grid is [-1, 1]
        flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if self.flip else 1.0
        return affine(x, angle, zoom, shift, flip)


def affine(x, angle, zoom, shift, flip: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Each image rotated by `angle` (radians), zoomed by `zoom` (> 1 zooms in), moved by
    `shift` (N, 2; grid units, a side is 2) and mirrored where `flip` is -1; border
    pixels extended. One `grid_sample` for the batch."""
    n, device = x.shape[0], x.device
    angle, zoom, shift = angle.to(device), zoom.to(device), shift.to(device, x.dtype)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
