"""Full-state GAN checkpoints: weights, optimizers, step and RNG states, written atomically.

Only tensors and plain Python values are stored (no pickled code), so a checkpoint loads
with `torch.load(weights_only=True)` and survives refactoring of the training code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save({"format": FORMAT, **state}, handle)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    if not path.is_file():
        raise MasksynthError(f"no GAN checkpoint at {path}: run 'masksynth train-gan' first")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001 - damaged or foreign file
        raise MasksynthError(f"{path} is not a readable masksynth checkpoint: {error}") from None
    if state.get("format") != FORMAT:
        raise MasksynthError(
            f"{path} has checkpoint format {state.get('format')}, "
            f"this masksynth reads format {FORMAT}"
        )
    return state


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
