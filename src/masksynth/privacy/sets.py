"""What the audit compares, per class: synthetic S, the GAN's training images T, held-out H.

H (the prepared val/test images, never shown to the GAN) is the yardstick: every measure
asks whether S is closer to T than unseen real photos of the same kind are.

Three spaces: pixels (64 px, all images), identity (SFace, all images with a detected
face) and Inception pool3 (subsets: ~0.2 s per image on two CPU cores). The Inception
subset of T holds the pixel-nearest training image of every S and H image in the subsets,
plus random ones, so copies are still found, and S and H are measured against the same T.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from masksynth.data import load_split
from masksynth.data.synthetic import load_synthetic, synthetic_files
from masksynth.errors import MasksynthError
from masksynth.fileio import read_csv, read_json
from masksynth.metrics.feature_cache import split_features
from masksynth.metrics.inception import extract_features
from masksynth.privacy.distances import nearest, pixels
from masksynth.privacy.identity import PUBLISHED_COSINE_THRESHOLD, embed_identities

log = logging.getLogger(__name__)
ROLES = ("synthetic", "train", "holdout")
IMAGE_SIZE = 64
MIN_SAME_PERSON_PAIRS = 20


@dataclass
class ClassSets:
    name: str
    index: int
    images: dict[str, torch.Tensor]  # role -> uint8 (n, 3, 64, 64)
    names: dict[str, list[str]]  # role -> file of each image
    features: dict[str, dict[str, np.ndarray]]  # space -> role -> (n, d)
    subset: dict[str, np.ndarray] = field(default_factory=dict)  # role -> rows in Inception


@dataclass
class AuditSets:
    classes: list[ClassSets]
    identity_threshold: float
    identity_calibration: dict
    discriminator: object | None  # callable (uint8 images, class index) -> logits, or None
    gan: dict  # what is known of the GAN behind the synthetic set (run folder, DP)


def load_sets(synth_dir: Path, prep_dir: Path, config, device: torch.device) -> AuditSets:
    # The synthetic folder is read first: a bad file fails in seconds, not after the embeddings.
    train = load_split(prep_dir, "train", IMAGE_SIZE)
    classes = train.class_names
    files = synthetic_files(synth_dir, classes)
    synth_images, synth_labels = load_synthetic(synth_dir, classes, IMAGE_SIZE)
    _, holdout, id_train, id_hold, threshold, calibration = load_real(prep_dir, config, train)
    synth_names = [str(path.relative_to(synth_dir)) for path, _ in files]

    id_synth = embed_identities(synth_images, config.workers)

    hold_images = torch.cat([d.images for _, d in holdout])
    hold_labels = torch.cat([d.labels for _, d in holdout])
    hold_names = [f"{s}:{src}" for s, d in holdout for src in d.sources]
    hold_rows = [(s, r) for s, d in holdout for r in range(len(d.labels))]
    id_hold_all = np.concatenate(id_hold)

    rng = np.random.default_rng(config.seed)
    sets = []
    for k, name in enumerate(classes):
        pick = {
            "synthetic": np.flatnonzero(synth_labels.numpy() == k),
            "train": np.flatnonzero(train.labels.numpy() == k),
            "holdout": np.flatnonzero(hold_labels.numpy() == k),
        }
        if min(len(v) for v in pick.values()) < 2:
            raise MasksynthError(
                f"class {name!r} needs at least 2 synthetic, 2 training and 2 held-out images "
                f"(has {', '.join(f'{r} {len(v)}' for r, v in pick.items())})"
            )
        images = {
            "synthetic": synth_images[pick["synthetic"]],
            "train": train.images[pick["train"]],
            "holdout": hold_images[pick["holdout"]],
        }
        cs = ClassSets(
            name,
            k,
            images,
            {
                "synthetic": [synth_names[i] for i in pick["synthetic"]],
                "train": [train.sources[i] for i in pick["train"]],
                "holdout": [hold_names[i] for i in pick["holdout"]],
            },
            {
                "pixel": {role: pixels(images[role]) for role in ROLES},
                "identity": {
                    "synthetic": id_synth[pick["synthetic"]],
                    "train": id_train[pick["train"]],
                    "holdout": id_hold_all[pick["holdout"]],
                },
            },
        )
        _inception(cs, pick, hold_rows, prep_dir, config, rng, device)
        sets.append(cs)

    gan = gan_behind(synth_dir)
    return AuditSets(sets, threshold, calibration, _discriminator(gan, device), gan)


def load_real(prep_dir: Path, config, train=None):
    """T, the held-out splits, their identity embeddings (cached) and the identity threshold.

    Shared by the audit and the release filter, so both judge with the same threshold.
    """
    train = train if train is not None else load_split(prep_dir, "train", IMAGE_SIZE)
    holdout = [(split, load_split(prep_dir, split, IMAGE_SIZE)) for split in config.holdout]
    log.info("identity embeddings (SFace) of the real images: cached in the prepared folder")
    id_train = split_features(prep_dir, "train", "identity", embed_identities)
    id_hold = [split_features(prep_dir, s, "identity", embed_identities) for s, _ in holdout]
    threshold, calibration = calibrate_identity(prep_dir, train, holdout, id_train, id_hold, config)
    return train, holdout, id_train, id_hold, threshold, calibration


def _inception(cs: ClassSets, pick, hold_rows, prep_dir, config, rng, device) -> None:
    """Inception features of a subset of each role (see the module docstring)."""
    px = cs.features["pixel"]
    sub_s = _choose(rng, len(px["synthetic"]), config.inception_synthetic)
    sub_h = _choose(rng, len(px["holdout"]), config.inception_holdout)
    _, nn_s = nearest(px["synthetic"][sub_s], px["train"])
    _, nn_h = nearest(px["holdout"][sub_h], px["train"])
    sub_t = np.unique(np.concatenate([nn_s, nn_h]))
    rest = np.setdiff1d(np.arange(len(px["train"])), sub_t)
    extra = max(0, config.inception_train - len(sub_t))
    sub_t = np.sort(np.concatenate([sub_t, rng.permutation(rest)[:extra]]))
    cs.subset = {"synthetic": sub_s, "train": sub_t, "holdout": sub_h}

    def compute(x: torch.Tensor) -> np.ndarray:
        return extract_features(x, device).numpy()

    train_rows = pick["train"][sub_t]
    by_split: dict[str, list[tuple[int, int]]] = {}
    for j, i in enumerate(pick["holdout"][sub_h]):
        split, row = hold_rows[i]
        by_split.setdefault(split, []).append((j, row))
    hold = np.zeros((len(sub_h), 2048), np.float32)
    for split, pairs in by_split.items():
        order, rows = zip(*pairs, strict=True)
        hold[list(order)] = split_features(prep_dir, split, "inception", compute, np.array(rows))
    cs.features["inception"] = {
        "synthetic": compute(cs.images["synthetic"][torch.from_numpy(sub_s)]),
        "train": split_features(prep_dir, "train", "inception", compute, train_rows),
        "holdout": hold,
    }


def _choose(rng: np.random.Generator, n: int, cap: int) -> np.ndarray:
    return np.sort(rng.permutation(n)[: min(n, cap)])


def calibrate_identity(prep_dir, train, holdout, id_train, id_hold, config) -> tuple[float, dict]:
    """The SFace cosine above which two faces count as one person.

    With person keys from `prepare --group-by`: the cosine that only `identity_far` of
    different-person pairs reach (false accept rate), with the share of same-person pairs
    it accepts. Without them: OpenCV Zoo's published SFace threshold.
    """
    keys = {r["source"]: r.get("group_key") or "" for r in read_csv(prep_dir / "manifest.csv")}
    sources = list(train.sources) + [src for _, d in holdout for src in d.sources]
    person = np.array([keys.get(src, "") for src in sources])
    embeddings = np.concatenate([id_train, *id_hold])
    ok = (person != "") & ~np.isnan(embeddings).any(1)
    person, embeddings = person[ok], embeddings[ok]
    sims = embeddings @ embeddings.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = person[:, None] == person[None, :]
    same_sims, diff_sims = sims[upper & same], sims[upper & ~same]
    if len(same_sims) < MIN_SAME_PERSON_PAIRS or len(diff_sims) < MIN_SAME_PERSON_PAIRS:
        return PUBLISHED_COSINE_THRESHOLD, {
            "source": "published",
            "note": "no person keys (prepare --group-by): OpenCV Zoo's published SFace "
            "threshold. H may then share people with T, which makes H a lenient yardstick "
            "for every measure",
            "threshold": PUBLISHED_COSINE_THRESHOLD,
        }
    threshold = float(np.quantile(diff_sims, 1 - config.identity_far))
    return threshold, {
        "source": "calibrated",
        "threshold": round(threshold, 4),
        "false_accept_rate": config.identity_far,
        "true_accept_rate": round(float((same_sims >= threshold).mean()), 4),
        "same_person_pairs": len(same_sims),
        "different_person_pairs": len(diff_sims),
        "people": len(set(person)),
    }


def gan_behind(synth_dir: Path) -> dict:
    """The GAN run a synthetic folder came from (via `sample.json`), if it is known."""
    meta_path = Path(synth_dir) / "sample.json"
    if not meta_path.is_file():
        return {}
    meta = read_json(meta_path)
    run_dir = Path(meta.get("run_dir", ""))
    info = {"run_dir": str(run_dir), "checkpoint_sha256": meta.get("checkpoint_sha256")}
    if (run_dir / "gan.json").is_file():
        gan = read_json(run_dir / "gan.json")
        info.update(
            preset=gan.get("config", {}).get("preset"),
            epochs=gan.get("epochs_done"),
            dp=gan.get("dp"),
        )
    return info


def _discriminator(gan: dict, device: torch.device):
    """The trained D of each class (for the white-box attack), or None if not available."""
    from masksynth.config import GanConfig
    from masksynth.gan.checkpoint import checkpoint_path, file_sha256, load_checkpoint
    from masksynth.gan.train import build_discriminator

    path = checkpoint_path(Path(gan["run_dir"])) if gan.get("run_dir") else None
    if path is None or not path.is_file():
        return None
    if gan.get("checkpoint_sha256") and file_sha256(path) != gan["checkpoint_sha256"]:
        log.warning("%s changed since the sample was drawn: no white-box attack", path)
        return None
    state = load_checkpoint(path)
    config = GanConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()}
    )
    discriminators = {}
    for unit, class_index in state["unit_classes"].items():
        D = build_discriminator(config, len(state["classes"]))
        D.load_state_dict(state["units"][unit]["D"])
        D.to(device).eval()
        for k in range(len(state["classes"])) if class_index is None else [class_index]:
            discriminators[k] = (D, class_index is None)

    @torch.no_grad()
    def score(images: torch.Tensor, class_index: int) -> np.ndarray:
        D, conditional = discriminators[class_index]
        out = []
        for batch in images.split(256):
            x = batch.to(device).float().div(127.5).sub(1.0)
            labels = torch.full((len(x),), class_index, device=device) if conditional else None
            out.append(D(x, labels).float().cpu())
        return torch.cat(out).numpy()

    return score
