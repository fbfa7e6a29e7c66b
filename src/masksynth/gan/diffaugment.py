"""Differentiable augmentation (Zhao et al. 2020, "DiffAugment"): colour (or its tone alone),
translation, cutout.

The same random transform family is applied to real and fake images in both the D and the
G step, so D cannot memorise the few real images and G still gets useful gradients.
Inputs and outputs are (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Apply each comma-separated transform of `policy` (color, tone, translation, cutout)."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        if name not in TRANSFORMS:
            raise ValueError(
                f"unknown DiffAugment transform {name!r}: choose from {list(TRANSFORMS)}"
            )
        x = TRANSFORMS[name](x)
    return x


def _rand(x: torch.Tensor, *shape: int) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    """Brightness, saturation and contrast, as DiffAugment draws them, in one pass: shifting
    by b, scaling the spread around the pixel's channel mean by s, then the spread around
    the image mean by c is c*s*x + c*(1 - s)*mean_c(x) + (1 - c)*mean(x) + b."""
    b, s, c = _rand(x, 1, 1, 1) - 0.5, _rand(x, 1, 1, 1) * 2, _rand(x, 1, 1, 1) + 0.5
    channel_mean = x.mean(dim=1, keepdim=True)
    offset = (1 - c) * x.mean(dim=(1, 2, 3), keepdim=True) + b + (c * (1 - s)) * channel_mean
    return torch.addcmul(offset, x, c * s)


def tone(x: torch.Tensor) -> torch.Tensor:
    """Brightness and contrast as `color` draws them, without its saturation, which turns
    some colour images grey: D still tells a grey photo from a colour one."""
    b, c = _rand(x, 1, 1, 1) - 0.5, _rand(x, 1, 1, 1) + 0.5
    return torch.addcmul((1 - c) * x.mean(dim=(1, 2, 3), keepdim=True) + b, x, c)


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to `ratio` of the size, filling with zeros (mid-grey in [-1, 1]). One
    row gather over the padded pixels (index_select: its backward is a cheap index_add)."""
    n, channels, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    ys = (torch.arange(h, device=x.device)[None, :, None] + dy + 1).clamp(0, h + 1)
    xs = (torch.arange(w, device=x.device)[None, None, :] + dx + 1).clamp(0, w + 1)
    rows = (torch.arange(n, device=x.device)[:, None, None] * (h + 2) + ys) * (w + 2) + xs
    pixels = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(-1, channels)
    return pixels.index_select(0, rows.flatten()).view(n, h, w, channels).permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero (mid-grey) a random square of `ratio` of the size inside each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    y0 = torch.randint(0, h - ch + 1, (n, 1, 1), device=x.device)
    x0 = torch.randint(0, w - cw + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= y0) & (ys < y0 + ch) & (xs >= x0) & (xs < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "tone": tone, "translation": translation, "cutout": cutout}
