"""The privacy filter of a release: drop synthetic images too close to a training photo.

An image is dropped when its face passes for a training subject (SFace cosine to the
nearest training face at or above both the audit's identity threshold and the cosine
that all but q of the held-out faces stay below) or when it is a near
copy of one training image in pixel space (the audit's `dcr_pixel` rule: distance and
nearest/second-nearest ratio both below the held-out images' q-quantiles). Both use
the audit's thresholds, computed from the prepared folder. The held-out cut matters: the
nearest of ~1,200 training faces passes the per-pair threshold for most unseen faces
(89 % on the dev set), so that threshold alone would drop most realistic faces. Images in
which no face is found cannot be recognised by face recognition and pass that check.
Inception-space checks are left to the audit: ~0.2 s per image on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from masksynth.errors import MasksynthError
from masksynth.privacy.distances import distance_ratio, k_nearest, pixels
from masksynth.privacy.identity import IdentityEmbedder, cosine_to_nearest
from masksynth.privacy.measures.dcr import copy_cuts, is_near_copy
from masksynth.privacy.sets import load_real


@dataclass
class ReleaseFilter:
    identity_threshold: float  # the audit's per-pair threshold
    calibration: dict
    identity_cut: dict[int, float]  # per class: max(threshold, H's (1 - q) quantile)
    near_copy_quantile: float
    train_identity: dict[int, np.ndarray]
    train_pixels: dict[int, np.ndarray]
    train_sources: dict[int, list[str]]
    copy_cuts: dict[int, tuple[float, float]]
    embedder: IdentityEmbedder

    def check(self, images: torch.Tensor, class_index: int) -> list[dict]:
        """Per image: cosine, ratio, nearest training file and `reason` ('' = keep)."""
        ids = self.embedder.embed(images, progress=False)
        cosine, id_index = cosine_to_nearest(ids, self.train_identity[class_index])
        id_cut = self.identity_cut[class_index]
        dist, px_index = k_nearest(pixels(images), self.train_pixels[class_index], 2)
        ratio = distance_ratio(dist[:, 0], dist[:, 1])
        cuts = self.copy_cuts[class_index]
        copies = is_near_copy(dist, cuts)
        sources = self.train_sources[class_index]
        out = []
        for i in range(len(images)):
            reason = ""
            if not np.isnan(cosine[i]) and cosine[i] >= id_cut:
                reason = (
                    f"identity: SFace cosine {cosine[i]:.3f} >= {id_cut:.3f} "
                    f"with {sources[id_index[i]]}"
                )
            elif copies[i]:
                reason = (
                    f"near copy of {sources[px_index[i, 0]]}: pixel distance {dist[i, 0]:.3f} "
                    f"< {cuts[0]:.3f} and ratio {ratio[i]:.3f} < {cuts[1]:.3f}"
                )
            out.append(
                {
                    "identity_cosine": None if np.isnan(cosine[i]) else round(float(cosine[i]), 4),
                    "pixel_distance": round(float(dist[i, 0]), 4),
                    "pixel_ratio": round(float(ratio[i]), 4),
                    "nearest_train": sources[px_index[i, 0]],
                    "reason": reason,
                }
            )
        return out

    def settings(self) -> dict:
        return {
            "identity_threshold": round(self.identity_threshold, 4),
            "identity_cut": {k: round(v, 4) for k, v in self.identity_cut.items()},
            "identity_calibration": self.calibration,
            "near_copy_quantile": self.near_copy_quantile,
            "pixel_copy_cuts": {
                k: {"distance": round(d, 4), "ratio": round(r, 4)}
                for k, (d, r) in self.copy_cuts.items()
            },
        }


def build_filter(prep_dir: str | Path, config) -> ReleaseFilter:
    """Thresholds and training features from a prepared folder (`config`: an AuditConfig)."""
    prep_dir = Path(prep_dir)
    train, holdout, id_train, id_hold, threshold, calibration = load_real(prep_dir, config)
    hold_images = torch.cat([d.images for _, d in holdout])
    hold_labels = torch.cat([d.labels for _, d in holdout])
    filt = ReleaseFilter(
        threshold, calibration, {}, config.near_copy_quantile, {}, {}, {}, {}, IdentityEmbedder()
    )
    id_hold_all = np.concatenate(id_hold)
    for k in range(len(train.class_names)):
        rows = np.flatnonzero(train.labels.numpy() == k)
        filt.train_identity[k] = id_train[rows]
        filt.train_pixels[k] = pixels(train.images[rows])
        filt.train_sources[k] = [train.sources[i] for i in rows]
        hold = pixels(hold_images[hold_labels == k])
        if len(hold) == 0:
            raise MasksynthError(f"class {train.class_names[k]!r} has no held-out images")
        filt.copy_cuts[k] = copy_cuts(hold, filt.train_pixels[k], config.near_copy_quantile)
        cos, _ = cosine_to_nearest(id_hold_all[hold_labels.numpy() == k], filt.train_identity[k])
        cos = cos[~np.isnan(cos)]
        usual = float(np.quantile(cos, 1 - config.near_copy_quantile)) if len(cos) else -1.0
        filt.identity_cut[k] = max(threshold, usual)
    return filt
