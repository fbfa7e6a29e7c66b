"""Full-state GAN checkpoints: weights, optimizers, step and RNG states, written atomically.

Only tensors and plain Python values are stored (no pickled code), so a checkpoint loads
with `torch.load(weights_only=True)` and survives refactoring of the training code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open
from masksynth.torchio import load_plain

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1
REQUIRED = {"units", "unit_classes", "classes", "config"}


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    if not path.is_file():
        raise MasksynthError(f"no GAN checkpoint at {path}: run 'masksynth train-gan' first")
    state = load_plain(path, "GAN checkpoint", device)
    if state.get("format") != FORMAT or not REQUIRED.issubset(state):
        raise MasksynthError(
            f"{path} is not a masksynth GAN checkpoint of format {FORMAT} "
            f"(format {state.get('format')!r})"
        )
    return state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
