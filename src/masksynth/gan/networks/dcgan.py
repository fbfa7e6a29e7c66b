"""The paper's DCGAN (64x64, z = 128x1x1) and a class-conditional variant.

G: ConvTranspose + BatchNorm + ReLU, tanh output. D: Conv + LeakyReLU(0.2) with BatchNorm
after the middle layers; it returns logits (the paper's sigmoid lives in the loss,
BCE-with-logits: the same model with stable numerics). The conditional pair uses a class
embedding concatenated to z in G and a projection discriminator (Miyato & Koyama 2018);
with `class_norm`, G's BatchNorm layers also scale and shift by class (conditional
BatchNorm), so the class steers every layer, not only the first. With `output_low_pass`,
G's last up-step is filtered against its checkerboard (lowpass.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from masksynth.gan.networks.lowpass import OutputLowPass

Z_DIM = 128
IMAGE_SIZE = 64


def _init_dcgan(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) weights, BN gamma N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # after the loop above, which drew their embeddings as weights
        if isinstance(m, ClassBatchNorm2d):  # the class-wise BN gamma and beta
            nn.init.normal_(m.scale.weight, 1.0, 0.02)
            nn.init.zeros_(m.shift.weight)


class ClassBatchNorm2d(nn.Module):
    """BatchNorm with a scale and shift per class (de Vries et al. 2017, as in SNGAN's and
    BigGAN's conditional generators); statistics are shared by the classes."""

    def __init__(self, channels: int, n_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(n_classes, channels)
        self.shift = nn.Embedding(n_classes, channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale(labels)[:, :, None, None], self.shift(labels)[:, :, None, None]
        return self.norm(x) * scale + shift


def through(layers: nn.Sequential, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """h through the layers, the class labels given to each class-wise BatchNorm."""
    for layer in layers:
        h = layer(h, labels) if isinstance(layer, ClassBatchNorm2d) else layer(h)
    return h


def batch_norm(channels: int, n_classes: int, class_norm: bool) -> nn.Module:
    return ClassBatchNorm2d(channels, n_classes) if class_norm else nn.BatchNorm2d(channels)


def _dense(conv: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    """Whether the layer is a plain dense convolution: no padding, stride, dilation, groups."""
    plain = (conv.stride, conv.padding, conv.dilation) == ((1, 1), (0, 0), (1, 1))
    return plain and conv.groups == 1


class LatentProjection(nn.ConvTranspose2d):
    """The first G layer: a 4x4 transposed convolution of a 1x1 input, which is a matrix
    product. Computed as one (a CPU runs the convolution's weight gradient several times
    slower); same weights and state-dict names. Views, not copies, for a channels_last
    weight, whose memory order is (in, 4, 4, out): the output comes out channels_last."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-2:] != (1, 1) or not _dense(self) or self.output_padding != (0, 0):
            return super().forward(z)
        c_in, c_out, kh, kw = self.weight.shape
        weight = self.weight.permute(0, 2, 3, 1).reshape(c_in, kh * kw * c_out)
        out = z.flatten(1) @ weight
        return out.view(len(z), kh, kw, c_out).permute(0, 3, 1, 2)


class WholeMapConv(nn.Conv2d):
    """D's last layer: a convolution whose kernel covers its whole input map (4x4 -> 1x1), a
    matrix product computed as one, as LatentProjection."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-2:] != self.kernel_size or not _dense(self):
            return super().forward(h)
        weight = self.weight.permute(0, 2, 3, 1).reshape(self.weight.shape[0], -1)
        out = h.permute(0, 2, 3, 1).flatten(1) @ weight.T
        if self.bias is not None:
            out = out + self.bias
        return out[:, :, None, None]


class Generator(nn.Module):
    """z (N, 128, 1, 1) [+ class] -> image (N, 3, 64, 64) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = Z_DIM,
        width: int = 64,
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
        low_pass = [OutputLowPass(3)] if output_low_pass else []

        def norm(channels: int) -> nn.Module:
            return batch_norm(channels, n_classes, class_norm)

        self.net = nn.Sequential(
            LatentProjection(in_ch, w * 8, 4, 1, 0, bias=False),  # 4x4
            norm(w * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 8, w * 4, 4, 2, 1, bias=False),  # 8x8
            norm(w * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 4, w * 2, 4, 2, 1, bias=False),  # 16x16
            norm(w * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(w * 2, w, 4, 2, 1, bias=False),  # 32x32
            norm(w),
            nn.ReLU(True),
            nn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False),  # 64x64
            *low_pass,
            nn.Tanh(),
        )
        _init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.net(z)
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        return through(self.net, torch.cat([z, self.embed(labels)[:, :, None, None]], 1), labels)


D_NORMS = ("batch", "spectral", "group", "layer")


class Discriminator(nn.Module):
    """image (N, 3, 64, 64) [+ class] -> logit (N,).

    `norm`: 'batch' (paper), 'spectral', 'group' (GroupNorm: each image is normalised on
    its own, which per-sample gradients and so differential privacy need) or 'layer'
    (GroupNorm with one group: each image on its own too, and as fast as BatchNorm on a
    CPU, where GroupNorm's 32 groups of few channels take 1.7 times BatchNorm's time).

    `class_heads`: linear class heads on the last features averaged over positions, their
    logits (N, class_heads, n_classes) returned beside the logit by `forward(...,
    with_classes=True)`: 1 for AC-GAN's auxiliary classifier (Odena et al. 2017), 2 for
    TAC-GAN's with its twin (Gong et al. 2019).
    """

    def __init__(
        self, width: int = 64, n_classes: int = 0, norm: str = "batch", class_heads: int = 0
    ) -> None:
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"unknown discriminator norm {norm!r}")
        if class_heads and not n_classes:
            raise ValueError("a class head needs classes")
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
            elif norm == "layer":
                layers.append(nn.GroupNorm(1, cout))
            return [*layers, nn.LeakyReLU(0.2, inplace=inplace)]

        self.features = nn.Sequential(
            sn(nn.Conv2d(3, w, 4, 2, 1, bias=norm == "spectral")),  # 32x32, no BN (DCGAN)
            nn.LeakyReLU(0.2, inplace=inplace),
            *block(w, w * 2),  # 16x16
            *block(w * 2, w * 4),  # 8x8
            *block(w * 4, w * 8),  # 4x4
        )
        self.head = sn(WholeMapConv(w * 8, 1, 4, 1, 0, bias=False))
        self.embed = sn(nn.Embedding(n_classes, w * 8 * 16)) if n_classes else None
        # created only when asked: a module draws its initial weights from the torch seed
        self.class_heads = class_heads
        self.classify = nn.Linear(w * 8, n_classes * class_heads) if class_heads else None
        _init_dcgan(self)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, with_classes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logit per image; with `with_classes`, also the class heads' logits."""
        h = self.features(x)
        logit = self.head(h).flatten()
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            # projection: <embed(y), phi(x)> over the 4x4 feature map
            logit = logit + (self.embed(labels) * h.flatten(1)).sum(dim=1)
        if not with_classes:
            return logit
        if self.classify is None:
            raise ValueError("this discriminator has no class head")
        return logit, self.classify(h.mean(dim=(2, 3))).view(len(x), self.class_heads, -1)
