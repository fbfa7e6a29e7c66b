"""Reading checkpoint files safely: tensors and plain values only, never code."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from masksynth.errors import MasksynthError


def load_plain(path: Path, what: str, device: torch.device | str = "cpu") -> dict:
    """The dict saved in `path`, loaded with `weights_only=True`; one-line errors otherwise.

    A file that holds other Python objects is refused before any of its code can run.
    """
    if not path.is_file():
        raise MasksynthError(f"no {what} at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise MasksynthError(
            f"{path} is not a masksynth {what}: it holds Python objects other than tensors "
            "and plain values, so it was not loaded (none of its code ran)"
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated, empty or foreign file
        raise MasksynthError(
            f"{path} is not a masksynth {what}: the file is damaged or not a torch file "
            f"({type(error).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise MasksynthError(f"{path} is not a masksynth {what}: it holds a {type(state).__name__}")
    return state


def load_weights(module: torch.nn.Module, weights, path: Path, what: str) -> None:
    """`module.load_state_dict(weights)`, with a one-line error when the shapes or keys differ."""
    if not isinstance(weights, dict):
        raise MasksynthError(f"{path} is not a masksynth {what}: its weights are missing")
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MasksynthError(
            f"{path}: the {what} does not fit its network ({first.rstrip(':.')})"
        ) from None
