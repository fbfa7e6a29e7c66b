"""Full-state GAN checkpoints: weights, optimizers, step and RNG states, written atomically.

The state of a run's pairs is stored under "units" (the name older checkpoints use).

Only tensors and plain Python values are stored (no pickled code), so a checkpoint loads
with `torch.load(weights_only=True)` and survives refactoring of the training code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from masksynth.distributed import Ranks
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open
from masksynth.gan.pair import GanPair
from masksynth.seeds import RESUMED_PROCESS, derive_seed
from masksynth.torchio import load_plain, load_weights

log = logging.getLogger(__name__)

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


def pairs_state(pairs: list[GanPair]) -> dict:
    """Every pair's weights and optimisers, by pair name."""
    return {
        p.name: {
            "G": p.G.state_dict(),
            "D": p.D.state_dict(),
            "opt_g": p.opt_g.state_dict(),
            "opt_d": p.opt_d.state_dict(),
            **({"G_ema": p.G_ema.state_dict()} if p.G_ema is not None else {}),
        }
        for p in pairs
    }


def restore_pairs(pairs: list[GanPair], state: dict, path: Path) -> None:
    for pair in pairs:
        saved = state["units"][pair.name]
        parts = {"G": pair.G, "D": pair.D, "opt_g": pair.opt_g, "opt_d": pair.opt_d}
        if pair.G_ema is not None:
            parts["G_ema"] = pair.G_ema
        for key, part in parts.items():
            load_weights(part, saved.get(key), path, f"GAN checkpoint's {key} of {pair.name!r}")


def restore_rng(state: dict, ranks: Ranks) -> None:
    """Each process continues its own noise; another process count continues, not exactly."""
    saved = state.get("rng_ranks", [state["rng"]])
    if len(saved) == ranks.world:
        set_rng_state(saved[ranks.rank])
        return
    log.warning(
        "resuming a run saved by %d process(es) with %d: the noise differs from then on",
        len(saved),
        ranks.world,
    )
    set_rng_state(saved[0])
    if ranks.on:
        seed = state["config"]["seed"]
        torch.manual_seed(derive_seed(seed, RESUMED_PROCESS, state["global_step"], ranks.rank))
