"""The paper's DCGAN (64x64, z = 128x1x1) and a class-conditional variant.

G: ConvTranspose + BatchNorm + ReLU, tanh output. D: Conv + LeakyReLU(0.2) with BatchNorm
after the middle layers; it returns logits (the paper's sigmoid lives in the loss,
BCE-with-logits: the same model with stable numerics). The conditional pair uses a class
embedding concatenated to z in G and a projection discriminator (Miyato & Koyama 2018).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

Z_DIM = 128
IMAGE_SIZE = 64


def _init_dcgan(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) weights, BN gamma N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (N, 128, 1, 1) [+ class] -> image (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, z_dim: int = Z_DIM, width: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        self.z_dim, self.n_classes = z_dim, n_classes
        self.embed = nn.Embedding(n_classes, z_dim) if n_classes else None
        in_ch = z_dim * 2 if n_classes else z_dim
        w = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(in_ch, w * 8, 4, 1, 0, bias=False),  # 4x4
            nn.BatchNorm2d(w * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1, bias=False),  # 8x8
            nn.BatchNorm2d(w * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1, bias=False),  # 16x16
            nn.BatchNorm2d(w * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1, bias=False),  # 32x32
            nn.BatchNorm2d(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )
        _init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(labels)[:, :, None, None]], dim=1)
        return self.net(z)


class Discriminator(nn.Module):
    """image (N, 3, 64, 64) [+ class] -> logit (N,).

    `norm`: 'batch' (paper), 'spectral', or 'group' (GroupNorm: each image is normalised on
    its own, which per-sample gradients and so differential privacy need).
    """

    def __init__(self, width: int = 64, n_classes: int = 0, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "spectral", "group"):
            raise ValueError(f"unknown discriminator norm {norm!r}")
        w = width
        sn = spectral_norm if norm == "spectral" else (lambda m: m)
        # Opacus' per-sample gradient hooks forbid in-place ops on a hooked layer's output.
        inplace = norm != "group"

        def block(cin: int, cout: int) -> list[nn.Module]:
            layers: list[nn.Module] = [sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "spectral"))]
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "group":
                layers.append(nn.GroupNorm(min(32, cout), cout))
            return [*layers, nn.LeakyReLU(0.2, inplace=inplace)]

        self.features = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1, bias=norm == "spectral")),  # 32x32, no BN (DCGAN)
            nn.LeakyReLU(0.2, inplace=inplace),
            *block(w, w * 2),  # 16x16
            *block(w * 2, w * 4),  # 8x8
            *block(w * 4, w * 8),  # 4x4
        )
        self.head = sn(nn.Conv2d(w * 8, 1, 4, 1, 0, bias=False))
        self.embed = sn(nn.Embedding(n_classes, w * 8 * 16)) if n_classes else None
        _init_dcgan(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logit = self.head(h).flatten()
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            # projection: <embed(y), phi(x)> over the 4x4 feature map
            logit = logit + (self.embed(labels) * h.flatten(1)).sum(dim=1)
        return logit
