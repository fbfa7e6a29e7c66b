"""A classifier checkpoint holds everything needed to classify a raw photo."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from masksynth.classify.models import build_model
from masksynth.device import CLASSIFIER_MEMORY_FORMAT
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open
from masksynth.torchio import load_plain, load_weights

FORMAT = 1


def save_classifier(path: Path, model: nn.Module, meta: dict) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb") as handle:
        torch.save({"format": FORMAT, "state_dict": state, **meta}, handle)


def load_classifier(path: str | Path, device: torch.device) -> tuple[nn.Module, dict]:
    """The model (eval mode, on `device`) and its metadata (classes, size, normalisation...)."""
    path = Path(path)
    state = load_plain(path, "classifier checkpoint")
    if state.get("format") != FORMAT or "arch" not in state or "state_dict" not in state:
        raise MasksynthError(f"{path} is not a masksynth classifier checkpoint")
    model = build_model(state["arch"], len(state["class_names"]), "none")
    load_weights(model, state.pop("state_dict"), path, "classifier checkpoint")
    return model.to(device, memory_format=CLASSIFIER_MEMORY_FORMAT).eval(), state


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] float images -> normalised float in the classifiers' memory format."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean_t = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - mean_t) / std_t).contiguous(memory_format=CLASSIFIER_MEMORY_FORMAT)


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, meta: dict, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Raw logits (N, n_classes) in fp32 for uint8 images (or float ones in [0, 1])."""
    out = []
    for start in range(0, len(images), batch_size):
        x = normalise(images[start : start + batch_size].to(device), meta["mean"], meta["std"])
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(meta["class_names"]))


def predict_proba(
    model: nn.Module, images: torch.Tensor, meta: dict, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Class probabilities (N, n_classes), with the checkpoint's fitted temperature applied
    (every prediction path goes through here, so the stored calibration always holds)."""
    logits = predict_logits(model, images, meta, device, batch_size)
    return torch.softmax(logits / meta.get("temperature", 1.0), dim=1)
