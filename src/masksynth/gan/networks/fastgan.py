"""A small-data generator in the style of FastGAN (Liu et al., ICLR 2021), at 64x64.

Up-blocks double the resolution with nearest upsampling, a 3x3 convolution, BatchNorm and a
gated linear unit (GLU: half the channels gate the other half); skip-layer excitation (SLE)
lets a low-resolution feature map gate the channels of a high-resolution one (4x4 -> 32x32,
8x8 -> 64x64), which keeps the global layout coherent with few parameters. Class
conditioning concatenates a class embedding to z, as the DCGAN's does, and with
`class_norm` scales and shifts every BatchNorm by class. Same interface as
dcgan.Generator: z (N, z_dim, 1, 1) [+ labels] -> image (N, 3, 64, 64) in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from masksynth.gan.networks.dcgan import (
    Z_DIM,
    ClassBatchNorm2d,
    LatentProjection,
    batch_norm,
    through,
)
from masksynth.gan.networks.lowpass import OutputLowPass


def _up(cin: int, cout: int, n_classes: int, class_norm: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False),
        batch_norm(cout * 2, n_classes, class_norm),
        nn.GLU(dim=1),
    )


class SkipExcitation(nn.Module):
    """Channel gates for a high-resolution map from a low-resolution one (FastGAN's SLE)."""

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_low, c_high, 4, 1, 0, bias=False),
            nn.SiLU(),
            nn.Conv2d(c_high, c_high, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.net(low)


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int = Z_DIM,
        width: int = 32,
        n_classes: int = 0,
        class_norm: bool = False,
        output_low_pass: bool = False,
    ) -> None:
        super().__init__()
        if class_norm and not n_classes:
            raise ValueError("class-conditional BatchNorm needs classes")
        self.z_dim, self.n_classes = z_dim, n_classes
        self.embed = nn.Embedding(n_classes, z_dim) if n_classes else None
        in_ch = z_dim * 2 if n_classes else z_dim
        w = width
        self.init = nn.Sequential(  # 1x1 -> 4x4
            LatentProjection(in_ch, w * 16 * 2, 4, 1, 0, bias=False),
            batch_norm(w * 16 * 2, n_classes, class_norm),
            nn.GLU(dim=1),
        )
        self.up8, self.up16 = (_up(c, c // 2, n_classes, class_norm) for c in (w * 16, w * 8))
        self.up32, self.up64 = (_up(c, c // 2, n_classes, class_norm) for c in (w * 4, w * 2))
        self.sle32, self.sle64 = SkipExcitation(w * 16, w * 2), SkipExcitation(w * 8, w)
        low_pass = [OutputLowPass(3)] if output_low_pass else []
        self.to_rgb = nn.Sequential(nn.Conv2d(w, 3, 3, 1, 1), *low_pass, nn.Tanh())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
        for m in self.modules():  # class-wise BN gamma / beta, not N(0, 0.02) embeddings
            if isinstance(m, ClassBatchNorm2d):
                nn.init.ones_(m.scale.weight)
                nn.init.zeros_(m.shift.weight)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(labels)[:, :, None, None]], dim=1)
        f4 = through(self.init, z, labels)
        f8 = through(self.up8, f4, labels)
        f32 = self.sle32(f4, through(self.up32, through(self.up16, f8, labels), labels))
        f64 = self.sle64(f8, through(self.up64, f32, labels))
        return self.to_rgb(f64)
