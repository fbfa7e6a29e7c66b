"""The privacy filter of a release: drop synthetic images too close to a training photo.

An image is dropped when its face passes for a training subject under either face matcher
(similarity to the nearest training face at or above both the matcher's identity threshold
and the similarity that all but q of the held-out faces stay below) or when it is a near
copy of one training image in pixel space (the audit's `dcr_pixel` rule: distance and
nearest/second-nearest ratio both below the held-out images' q-quantiles).

Every threshold is calibrated on the val split (`AuditConfig.filter_holdout`), never on
test: the audit judges on test, so it does not grade its own filter, and no classifier's
training images are chosen with test statistics. The held-out cut matters: the nearest of
~1,200 training faces passes the per-pair threshold for most unseen faces (89 % on the dev
set), so that threshold alone would drop most realistic faces. Images in which no face is
found cannot be recognised by face recognition and pass the identity check (the audit
reports their share). Inception-space checks are left to the audit: ~0.2 s per image on a
CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from masksynth.config import AuditConfig
from masksynth.data.cache import read_prepared
from masksynth.data.identity import embed_identities, matcher, most_similar
from masksynth.errors import MasksynthError
from masksynth.fileio import read_json
from masksynth.gan.sample import Screen
from masksynth.privacy.distances import distance_ratio, k_nearest, pixels
from masksynth.privacy.measures.dcr import copy_cuts, is_near_copy
from masksynth.privacy.sets import IdentitySpace, load_real


@dataclass
class ReleaseFilter:
    holdout: tuple[str, ...]
    identity: dict[str, IdentitySpace]  # matcher -> its threshold (calibrated on holdout)
    near_copy_quantile: float
    workers: int
    identity_cut: dict[str, dict[int, float]] = field(default_factory=dict)  # matcher -> class
    train_identity: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    train_pixels: dict[int, np.ndarray] = field(default_factory=dict)
    train_sources: dict[int, list[str]] = field(default_factory=dict)
    copy_cuts: dict[int, tuple[float, float]] = field(default_factory=dict)

    def check(self, images: torch.Tensor, class_index: int) -> list[dict]:
        """Per image: similarities, ratio, nearest training file and `reason` ('' = keep)."""
        sources = self.train_sources[class_index]
        reasons = [""] * len(images)
        similarity = {}
        for name, space in self.identity.items():
            ids = embed_identities(images, self.workers, name)
            best, index = most_similar(name, ids, self.train_identity[name][class_index])
            similarity[name] = best
            cut = self.identity_cut[name][class_index]
            for i in np.flatnonzero(~np.isnan(best) & (best >= cut)):
                reasons[i] = reasons[i] or (
                    f"identity: {space.matcher.label} similarity {best[i]:.3f} >= {cut:.3f} "
                    f"with {sources[index[i]]}"
                )
        dist, px_index = k_nearest(pixels(images), self.train_pixels[class_index], 2)
        ratio = distance_ratio(dist[:, 0], dist[:, 1])
        cuts = self.copy_cuts[class_index]
        for i in np.flatnonzero(is_near_copy(dist, cuts)):
            reasons[i] = reasons[i] or (
                f"near copy of {sources[px_index[i, 0]]}: pixel distance {dist[i, 0]:.3f} "
                f"< {cuts[0]:.3f} and ratio {ratio[i]:.3f} < {cuts[1]:.3f}"
            )
        sface = similarity.get("sface", np.full(len(images), np.nan))
        return [
            {
                "identity_cosine": None if np.isnan(sface[i]) else round(float(sface[i]), 4),
                "pixel_distance": round(float(dist[i, 0]), 4),
                "pixel_ratio": round(float(ratio[i]), 4),
                "nearest_train": sources[px_index[i, 0]],
                "reason": reasons[i],
            }
            for i in range(len(images))
        ]

    def settings(self) -> dict:
        return {
            "holdout": list(self.holdout),
            "identity": {
                name: {
                    "threshold": round(space.threshold, 4),
                    "cut": {k: round(v, 4) for k, v in self.identity_cut[name].items()},
                    "calibration": space.calibration,
                }
                for name, space in self.identity.items()
            },
            "near_copy_quantile": self.near_copy_quantile,
            "pixel_copy_cuts": {
                k: {"distance": round(d, 4), "ratio": round(r, 4)}
                for k, (d, r) in self.copy_cuts.items()
            },
        }


def build_filter(prep_dir: str | Path, config) -> ReleaseFilter:
    """Thresholds and training features from a prepared folder (`config`: an AuditConfig)."""
    real = load_real(Path(prep_dir), config, config.filter_holdout)
    train = real.train
    hold_images = torch.cat([d.images for _, d in real.holdout])
    hold_labels = torch.cat([d.labels for _, d in real.holdout]).numpy()
    filt = ReleaseFilter(
        config.filter_holdout, real.identity, config.near_copy_quantile, config.workers
    )
    for k in range(len(train.class_names)):
        rows = np.flatnonzero(train.labels.numpy() == k)
        filt.train_pixels[k] = pixels(train.images[rows])
        filt.train_sources[k] = [train.sources[i] for i in rows]
        hold = pixels(hold_images[hold_labels == k])
        if len(hold) == 0:
            raise MasksynthError(
                f"class {train.class_names[k]!r} has no images in the "
                f"{'/'.join(config.filter_holdout)} split to calibrate the filter on"
            )
        filt.copy_cuts[k] = copy_cuts(hold, filt.train_pixels[k], config.near_copy_quantile)
        for name, (id_train, id_hold) in real.embeddings.items():
            filt.train_identity.setdefault(name, {})[k] = id_train[rows]
            best, _ = most_similar(name, np.concatenate(id_hold)[hold_labels == k], id_train[rows])
            best = best[~np.isnan(best)]
            usual = (
                float(np.quantile(best, 1 - config.near_copy_quantile)) if len(best) else -np.inf
            )
            filt.identity_cut.setdefault(name, {})[k] = max(real.identity[name].threshold, usual)
    return filt


DETAILS = ("identity_cosine", "pixel_distance", "pixel_ratio", "nearest_train")


def release_screen(
    run_dir: str | Path,
    prep_dir: str | Path | None,
    max_candidates: int = 10,
    matchers: tuple[str, ...] | None = None,
):
    """`gan.sample`'s screen for a privacy-filtered release of the GAN in `run_dir`.

    Checks that `prep_dir` (default: the one gan.json names) holds the very photos the GAN
    learned from; the filter itself is built only when a sample is drawn. `matchers`: the
    face matchers (default: AuditConfig's).
    """
    prep_dir = _gan_prep_dir(Path(run_dir), prep_dir)
    config = AuditConfig(**({} if matchers is None else {"matchers": tuple(matchers)}))
    if not config.matchers:
        raise MasksynthError("the privacy filter needs at least one face matcher")
    for name in config.matchers:
        matcher(name)  # an unknown name fails now, not after the GAN has sampled
    keys = ("filter_holdout", "near_copy_quantile", "identity_far", "matchers")
    inputs = {
        "prepared": read_prepared(prep_dir)["fingerprint"],
        "settings": {k: config.to_dict()[k] for k in keys},
        "max_candidates": max_candidates,
    }
    return Screen("privacy_filter", inputs, lambda: build_filter(prep_dir, config), DETAILS)


def _gan_prep_dir(run_dir: Path, prep_dir: str | Path | None) -> Path:
    """The prepared folder the GAN learned from: the filter compares with its train split."""
    gan = read_json(run_dir / "gan.json") if (run_dir / "gan.json").is_file() else {}
    if prep_dir is None:
        prep_dir = gan.get("prep_dir")
        if not prep_dir or not Path(prep_dir).is_dir():
            raise MasksynthError(
                f"--privacy-filter needs the GAN's prepared folder: {run_dir}/gan.json does not "
                "name one that exists; pass --prep PREP_DIR"
            )
    prep_dir = Path(prep_dir)
    trained_on = gan.get("prep_fingerprint")
    now = read_prepared(prep_dir)["fingerprint"]
    if trained_on and trained_on != now:
        raise MasksynthError(
            f"the GAN in {run_dir} learned from prepared data {trained_on}, but {prep_dir} is "
            f"{now}: the filter must compare with the GAN's own training photos"
        )
    return prep_dir
