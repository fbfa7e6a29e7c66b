"""What the audit compares, per class: synthetic S, the GAN's training images T, held-out H.

H (prepared splits never shown to the GAN: the test split for the audit, the val split for
the release filter, so the audit never grades its own filter) is the yardstick: every
measure asks whether S is closer to T than unseen real photos are.

Three spaces: pixels (64 px, all images), identity (two face matchers, all images with a
detected face) and Inception pool3 (subsets: ~0.2 s per image on two CPU cores). The
Inception subset of T holds the pixel-nearest training image of every S and H image in the
subsets, plus random ones, so copies are still found, and S and H are measured against the
same T.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from masksynth.config import TRAIN
from masksynth.data import SplitData, load_split
from masksynth.data.identity import (
    Matcher,
    embed_identities,
    feature_space,
    matcher,
    similarities,
)
from masksynth.data.synthetic import load_synthetic, synthetic_files
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_csv, read_json
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.load import load_discriminators
from masksynth.metrics.feature_cache import split_features
from masksynth.metrics.inception import FEATURE_SPACE, extract_features
from masksynth.privacy.distances import nearest, pixels

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
class IdentitySpace:
    """One face matcher and its same-person threshold."""

    matcher: Matcher
    threshold: float
    calibration: dict

    @property
    def space(self) -> str:
        return feature_space(self.matcher.name)


@dataclass
class RealSets:
    train: SplitData
    holdout: list[tuple[str, SplitData]]
    embeddings: dict[str, tuple[np.ndarray, list[np.ndarray]]]  # matcher -> (T, [H per split])
    identity: dict[str, IdentitySpace]


@dataclass
class AuditSets:
    classes: list[ClassSets]
    identity: dict[str, IdentitySpace]
    # (members, others, class index) -> their scores by the GAN's own D, or None
    membership: object | None
    gan: dict  # what is known of the GAN behind the synthetic set (run folder, DP)


def load_sets(synth_dir: Path, prep_dir: Path, config, device: torch.device) -> AuditSets:
    # The synthetic folder is read first: a bad file fails in seconds, not after the embeddings.
    train = load_split(prep_dir, TRAIN, IMAGE_SIZE)
    classes = train.class_names
    files = synthetic_files(synth_dir, classes)
    synth_images, synth_labels = load_synthetic(synth_dir, classes, IMAGE_SIZE)
    real = load_real(prep_dir, config, config.holdout, train)
    synth_names = [str(path.relative_to(synth_dir)) for path, _ in files]
    id_synth = {
        name: embed_identities(synth_images, config.workers, name) for name in real.identity
    }

    hold_images = torch.cat([d.images for _, d in real.holdout])
    hold_labels = torch.cat([d.labels for _, d in real.holdout])
    hold_names = [f"{s}:{src}" for s, d in real.holdout for src in d.sources]
    hold_rows = [(s, r) for s, d in real.holdout for r in range(len(d.labels))]

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
        features = {"pixel": {role: pixels(images[role]) for role in ROLES}}
        for matcher_name, (id_train, id_hold) in real.embeddings.items():
            features[feature_space(matcher_name)] = {
                "synthetic": id_synth[matcher_name][pick["synthetic"]],
                "train": id_train[pick["train"]],
                "holdout": np.concatenate(id_hold)[pick["holdout"]],
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
            features,
        )
        _inception(cs, pick, hold_rows, prep_dir, config, rng, device)
        sets.append(cs)

    gan = gan_behind(synth_dir)
    return AuditSets(sets, real.identity, membership_scorer(gan, device, config.seed), gan)


def load_real(prep_dir: Path, config, holdout: tuple[str, ...], train=None) -> RealSets:
    """T, the held-out splits, their identity embeddings (cached) and each matcher's threshold.

    The audit passes the test split as `holdout`, the release filter the val split: each
    calibrates its thresholds on its own held-out split only.
    """
    train = train if train is not None else load_split(prep_dir, TRAIN, IMAGE_SIZE)
    held = [(split, load_split(prep_dir, split, IMAGE_SIZE)) for split in holdout]
    keys = person_keys(prep_dir)
    embeddings, identity = {}, {}
    for name in config.matchers:
        m = matcher(name)
        log.info("%s identity embeddings of the real images (cached in %s)", m.label, prep_dir)

        def embed(x: torch.Tensor, name: str = name) -> np.ndarray:
            return embed_identities(x, config.workers, name)

        space = feature_space(name)
        id_train = split_features(prep_dir, TRAIN, space, embed)
        id_hold = [split_features(prep_dir, s, space, embed) for s, _ in held]
        embeddings[name] = (id_train, id_hold)
        sources = list(train.sources) + [src for _, d in held for src in d.sources]
        people = np.array([keys.get(src, "") for src in sources])
        identity[name] = calibrate(m, people, np.concatenate([id_train, *id_hold]), config)
        identity[name].calibration["splits"] = ["train", *holdout]
    return RealSets(train, held, embeddings, identity)


def person_keys(prep_dir: Path) -> dict[str, str]:
    """Source file -> its person key from `prepare` ('' where none)."""
    return {r["source"]: r.get("group_key") or "" for r in read_csv(prep_dir / "manifest.csv")}


def calibrate(m: Matcher, people: np.ndarray, embeddings: np.ndarray, config) -> IdentitySpace:
    """The similarity at or above which two faces count as one person.

    With person keys: the similarity that only `identity_far` of different-person pairs reach
    (false accept rate), and the share of same-person pairs it accepts (the measure's power).
    Without them: the matcher's published threshold, and no known power.
    """
    ok = (people != "") & ~np.isnan(embeddings).any(1)
    people, embeddings = people[ok], embeddings[ok]
    sims = similarities(m.name, embeddings, embeddings)
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = people[:, None] == people[None, :]
    same_sims, diff_sims = sims[upper & same], sims[upper & ~same]
    if len(same_sims) < MIN_SAME_PERSON_PAIRS or len(diff_sims) < MIN_SAME_PERSON_PAIRS:
        return IdentitySpace(
            m,
            m.published_threshold,
            {
                "source": "published",
                "threshold": m.published_threshold,
                "power": None,
                "note": f"no person keys: {m.source}, whose power on these faces is unknown. "
                "H may then share people with T, which makes H a lenient yardstick",
            },
        )
    threshold = float(np.quantile(diff_sims, 1 - config.identity_far))
    return IdentitySpace(
        m,
        threshold,
        {
            "source": "calibrated",
            "threshold": round(threshold, 4),
            "false_accept_rate": config.identity_far,
            # the measure's power: how often a real same-person pair is recognised
            "power": round(float((same_sims >= threshold).mean()), 4),
            "same_person_pairs": len(same_sims),
            "different_person_pairs": len(diff_sims),
            "people": len(set(people)),
        },
    )


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
        hold[list(order)] = split_features(prep_dir, split, FEATURE_SPACE, compute, np.array(rows))
    cs.features["inception"] = {
        "synthetic": compute(cs.images["synthetic"][torch.from_numpy(sub_s)]),
        "train": split_features(prep_dir, "train", FEATURE_SPACE, compute, train_rows),
        "holdout": hold,
    }


def _choose(rng: np.random.Generator, n: int, cap: int) -> np.ndarray:
    return np.sort(rng.permutation(n)[: min(n, cap)])


def gan_behind(synth_dir: Path) -> dict:
    """The GAN run a synthetic folder came from (via `sample.json`), if it is known."""
    meta_path = Path(synth_dir) / "sample.json"
    if not meta_path.is_file():
        return {}
    meta = read_json(meta_path)
    run_dir = Path(meta.get("run_dir", ""))
    moved = Path(synth_dir) / meta.get("run_dir_relative", "")
    if "run_dir_relative" in meta and (moved / "gan.json").is_file():
        run_dir = moved.resolve()  # the sample and its GAN were moved together
    info = {
        "run_dir": str(run_dir),
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "prep_fingerprint": meta.get("prep_fingerprint"),
        "filtered": bool((meta.get("privacy_filter") or {}).get("on")),
        "filter_holdout": (meta.get("privacy_filter") or {}).get("holdout"),
    }
    if (run_dir / "gan.json").is_file():
        gan = read_json(run_dir / "gan.json")
        info.update(
            preset=gan.get("config", {}).get("preset"),
            epochs=gan.get("epochs_done"),
            dp=gan.get("dp"),
        )
    return info


def membership_scorer(gan: dict, device: torch.device, seed: int):
    """The white-box attack's scorer: each class's trained D, used as it was trained.

    D learned in train mode, normalising each batch by its own statistics, so it scores that
    way too: members and non-members shuffled together into batches of the training size, in
    train mode (on a copy, whose running statistics are thrown away). Eval mode would score
    with running averages that D never used on its decisions.
    """
    path = checkpoint_path(Path(gan["run_dir"])) if gan.get("run_dir") else None
    if path is None or not path.is_file():
        if path is not None:
            log.warning("no GAN checkpoint at %s: no white-box membership attack", path)
        return None
    if gan.get("checkpoint_sha256") and file_sha256(path) != gan["checkpoint_sha256"]:
        log.warning("%s changed since the sample was drawn: no white-box attack", path)
        return None
    config, discriminators = load_discriminators(path.parent, device)

    @torch.no_grad()
    def score(members: torch.Tensor, others: torch.Tensor, class_index: int):
        trained, conditional = discriminators[class_index]
        D = copy.deepcopy(trained).train()
        images = torch.cat([members, others])
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        out = torch.empty(len(images))
        chunks = max(1, round(len(images) / config.batch_size))
        for rows in np.array_split(order.numpy(), chunks):
            x = images[rows].to(device).float().div(127.5).sub(1.0)
            labels = torch.full((len(x),), class_index, device=device) if conditional else None
            out[torch.from_numpy(rows)] = D(x, labels).float().flatten().cpu()
        return out[: len(members)].numpy(), out[len(members) :].numpy()

    return score
