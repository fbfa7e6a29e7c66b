"""What a deployed camera does to a face crop, on batches: small faces, blur, JPEG, noise,
lighting, a hand over the face, a detector box that is off, a tilted head, no colour.

Each degradation takes float images (N, C, H, W) in [0, 1] and returns the same shape. The
fixed-strength forms are the robustness report's (`ROBUSTNESS`); `Degrade` draws a random
strength per image for training. Randomness comes from an explicit `torch.Generator`, so a
seed gives the same degraded images every time.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from masksynth.classify.augment import affine


def downscale(x: torch.Tensor, side: int) -> torch.Tensor:
    """The face as a camera sees it `side` px wide, scaled back up to the model's size."""
    size = x.shape[-2:]
    small = F.interpolate(x, size=(side, side), mode="area")
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (defocus, motion smear) of standard deviation `sigma` px."""
    if sigma <= 0:
        return x
    kernel = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def jpeg(x: torch.Tensor, quality: int | list[int]) -> torch.Tensor:
    """A real JPEG round trip (libjpeg through Pillow, 4:2:0) at `quality` (one per image)."""
    qualities = [quality] * len(x) if isinstance(quality, int) else quality
    images = (x.detach().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for image, q in zip(images, qualities, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(q))
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


def noise(x: torch.Tensor, sigma: torch.Tensor | float, generator: torch.Generator) -> torch.Tensor:
    """Sensor noise: Gaussian of standard deviation `sigma` (a share of the full range)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1).to(x.device)
    grain = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sigma * grain.to(x.device)).clamp(0, 1)


def desaturate(x: torch.Tensor, saturation: float) -> torch.Tensor:
    """Colour scaled to `saturation` of the photo's (0: grey scale, as an entrance camera's
    infrared night mode sees a face)."""
    return TF.adjust_saturation(x, saturation)


def lighting(x: torch.Tensor, gain: torch.Tensor | float, gamma: torch.Tensor | float):
    """Exposure (`gain`, 1 = unchanged) and tone curve (`gamma`, 1 = unchanged)."""
    gain = torch.as_tensor(gain, dtype=x.dtype).reshape(-1, 1, 1, 1).to(x.device)
    gamma = torch.as_tensor(gamma, dtype=x.dtype).reshape(-1, 1, 1, 1).to(x.device)
    return (x.clamp_min(1e-6) ** gamma * gain).clamp(0, 1)


# Skin tones (sRGB in [0, 1]) from light to dark, for the occluding hand.
SKIN = torch.tensor(
    [[0.96, 0.80, 0.69], [0.90, 0.71, 0.56], [0.78, 0.57, 0.42], [0.55, 0.38, 0.26],
     [0.36, 0.24, 0.16]]
)  # fmt: skip


def occlude(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A hand over part of the face: a skin-toned ellipse covering about `share` of each
    image, at a random place in its lower two thirds (where a hand meets a mask)."""
    n, _, h, w = x.shape
    u = torch.rand(n, 4, generator=generator)
    tone = SKIN[torch.randint(len(SKIN), (n,), generator=generator)]
    # an ellipse of area share * h * w, 1.0 to 1.8 times as wide as high
    aspect = 1.0 + 0.8 * u[:, 0]
    ry = torch.sqrt(share * h * w / (math.pi * aspect))
    rx = ry * aspect
    cy = h / 3 + u[:, 1] * (2 * h / 3)
    cx = u[:, 2] * w
    ys = torch.arange(h, dtype=x.dtype)[None, :, None]
    xs = torch.arange(w, dtype=x.dtype)[None, None, :]
    inside = ((ys - cy[:, None, None]) / ry[:, None, None]) ** 2 + (
        (xs - cx[:, None, None]) / rx[:, None, None]
    ) ** 2 <= 1
    shade = 0.85 + 0.3 * u[:, 3]  # the hand's own lighting
    colour = (tone * shade[:, None]).clamp(0, 1).to(x.dtype)
    mask = inside[:, None].to(x.device)
    return torch.where(mask, colour[:, :, None, None].to(x.device), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor | float) -> torch.Tensor:
    """A tilted head: rotation by `degrees` (counter-clockwise), border pixels extended."""
    angle = torch.as_tensor(degrees, dtype=x.dtype).expand(len(x)).to(x.device)
    return affine(x, torch.deg2rad(angle), torch.ones_like(angle), torch.zeros(len(x), 2))


def crop_jitter(x: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """A detector box that is off: each image's box moved by up to `share` of its side in x
    and y and grown or shrunk by up to `share`, border pixels extended."""
    n = len(x)
    u = torch.rand(n, 3, generator=generator, dtype=x.dtype) * 2 - 1
    zoom = 1.0 + share * u[:, 0]
    shift = share * 2 * u[:, 1:]  # affine grids span [-1, 1]: a side is 2 units
    return affine(x, torch.zeros(n, dtype=x.dtype), zoom, shift)


# The robustness report: (name, unit, strengths, degradation of one strength).
ROBUSTNESS = (
    ("face side", "px", (24, 32, 48), lambda x, s, g: downscale(x, s)),
    ("JPEG quality", "", (30, 50), lambda x, s, g: jpeg(x, s)),
    ("blur sigma", "px", (1, 2), lambda x, s, g: blur(x, s)),
    ("rotation", "degrees", (20,), lambda x, s, g: rotate(x, s)),
    ("crop jitter", "share of the side", (0.15,), lambda x, s, g: crop_jitter(x, s, g)),
    ("colour saturation", "x", (0.0,), lambda x, s, g: desaturate(x, s)),
)


@dataclass(frozen=True)
class Degrade:
    """Training augmentation: each image gets each degradation with probability `p`, at a
    random strength up to the report's harshest (so training covers what is measured; tilt
    comes from the classic augmentation's rotation)."""

    p: float = 0.3
    sides: tuple[int, int] = (16, 48)
    max_blur: float = 2.0
    jpeg_quality: tuple[int, int] = (20, 90)
    max_noise: float = 0.06
    max_jitter: float = 0.15
    max_occlusion: float = 0.25
    # every step of __call__, in order: a classifier records them, so that one trained with
    # another set is not reused as if it had seen these
    KINDS = ("small face", "blur", "JPEG", "noise", "lighting", "hand", "crop jitter", "grey scale")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(x)

        def chosen() -> torch.Tensor:
            return (torch.rand(n, generator=generator) < self.p).to(x.device)

        def strength(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        def apply(pick: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
            return torch.where(pick[:, None, None, None], degraded, x)

        # size, blur and hand take one strength per batch (one interpolation size, one
        # kernel, one area), drawn anew for every batch
        side = int(strength(*self.sides)[0])
        x = apply(chosen(), downscale(x, side))
        x = apply(chosen(), blur(x, float(strength(0.3, self.max_blur)[0])))
        pick, quality = chosen(), strength(*self.jpeg_quality)
        if pick.any():
            x = x.clone()
            x[pick] = jpeg(x[pick], [int(q) for q in quality[pick.cpu()]])
        x = apply(chosen(), noise(x, strength(0.0, self.max_noise), generator))
        gain, gamma = strength(0.6, 1.4), strength(0.7, 1.4)
        x = apply(chosen(), lighting(x, gain, gamma))
        x = apply(chosen(), occlude(x, float(strength(0.05, self.max_occlusion)[0]), generator))
        x = apply(chosen(), crop_jitter(x, self.max_jitter, generator))
        # last, so that noise and a hand turn grey too, as under an infrared camera
        return apply(chosen(), desaturate(x, 0.0))
