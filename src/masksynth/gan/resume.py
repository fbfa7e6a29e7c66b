"""What a GAN run is built from, and when a run may be continued (`train-gan --resume`)."""

from __future__ import annotations

from pathlib import Path

from masksynth.config import GAN_RUN_SETTINGS, GanConfig
from masksynth.errors import MasksynthError
from masksynth.fileio import read_json
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.provenance import changes


def gan_inputs(prep_fingerprint: str, config: GanConfig) -> dict:
    """What a GAN run is built from: the prepared data and the recipe (see provenance)."""
    return {"prepared": prep_fingerprint, "recipe": config.recipe()}


def recorded_gan_inputs(recorded: dict | None) -> dict | None:
    """A run's recorded inputs with its recipe read back as a config: a setting added since
    it was written takes its default (what that run trained with) instead of counting as
    changed. A recipe this version cannot read is left as written (and so differs)."""
    if not recorded or not isinstance(recorded.get("recipe"), dict):
        return recorded
    try:
        recipe = GanConfig.from_dict(recorded["recipe"]).recipe()
    except (MasksynthError, TypeError):
        return recorded
    return {**recorded, "recipe": recipe}


def resume_config(run_dir: Path, preset: str | None = None, **given) -> GanConfig:
    """The config that resuming `run_dir` asks for: the saved one, with the options given now.

    Options left out (None) keep their saved values; `resumable` refuses those that conflict.
    """
    saved = load_checkpoint(checkpoint_path(Path(run_dir)))["config"]
    asked = {k: v for k, v in given.items() if v is not None}
    if preset is not None:
        asked["preset"] = preset
    return GanConfig.from_dict({**saved, **asked})


def resumable(run_dir: Path, state: dict, config: GanConfig, prep_fingerprint: str) -> GanConfig:
    """The saved config with this call's run settings, or a one-line refusal of a conflict."""
    saved = GanConfig.from_dict(state["config"])
    trained_on = state.get("prep_fingerprint")
    if trained_on is None and (run_dir / "gan.json").is_file():  # checkpoints before provenance
        trained_on = read_json(run_dir / "gan.json").get("prep_fingerprint")
    if trained_on != prep_fingerprint:
        raise MasksynthError(
            f"cannot resume {run_dir}: it was trained on prepared data {trained_on}, and the "
            f"prepared folder is now {prep_fingerprint} (re-prepared or another folder); "
            "train anew into another --out"
        )
    conflicts = changes(saved.recipe(), config.recipe())
    if conflicts:
        raise MasksynthError(
            f"cannot resume {run_dir} with other settings ({'; '.join(conflicts)}): "
            "leave them out to keep the run's own, or train anew into another --out"
        )
    if config.epochs < state["epoch"]:
        raise MasksynthError(
            f"{run_dir} has already trained {state['epoch']} epochs: --epochs must be at least "
            "that to resume it"
        )
    trained_s = state.get("elapsed_s", 0.0)
    if config.minutes != saved.minutes and 0 < config.minutes * 60 < trained_s:
        # resumed, it would stop at once and be recorded as a run of the smaller budget
        raise MasksynthError(
            f"{run_dir} has already trained {trained_s / 60:.1f} minutes: --minutes must be at "
            "least that to resume it"
        )
    run = {k: v for k, v in config.to_dict().items() if k in GAN_RUN_SETTINGS}
    return GanConfig.from_dict({**saved.to_dict(), **run})
