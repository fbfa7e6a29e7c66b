"""A fixed low-pass filter for a generator's output, before its tanh.

A stride-2 transposed convolution paints a checkerboard: its four output phases get
different kernel taps (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"). On
the dev data, quick's fakes carried 13 to 45 times the real photos' power at the 64 px
image's highest frequency (the (32, 32) DFT bin), which Inception sees. The binomial filter
[1, 2, 1] x [1, 2, 1] / 16 passes nothing at that frequency and keeps a constant image as
it is (reflect padding): the filtered up-sampling of StyleGAN (Karras et al. 2019) and of
Zhang's anti-aliased networks (2019), here after G's last up-step only (after every step it
collapsed). It has no weights: a generator's state dict is the same with it or without.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

BINOMIAL = (1.0, 2.0, 1.0)


class OutputLowPass(nn.Module):
    """(N, C, H, W) -> the same shape, each channel filtered on its own."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor(BINOMIAL)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2
        # not persistent: fixed, and not part of the weights a checkpoint holds
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reflect padding by one pixel, from slices: ReflectionPad2d's CUDA backward is
        # nondeterministic, and refused under --deterministic
        x = torch.cat([x[..., 1:2], x, x[..., -2:-1]], dim=-1)
        x = torch.cat([x[..., 1:2, :], x, x[..., -2:-1, :]], dim=-2)
        return functional.conv2d(x, self.kernel.to(x.dtype), groups=self.kernel.shape[0])
