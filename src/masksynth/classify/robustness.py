"""Where a classifier breaks before it is deployed: balanced accuracy on a test set under
each camera degradation of `degrade.ROBUSTNESS`, at fixed strengths and a fixed seed."""

from __future__ import annotations

import numpy as np
import torch

from masksynth.classify.checkpoint import predict_proba
from masksynth.classify.degrade import ROBUSTNESS
from masksynth.metrics.classification import binary_metrics
from masksynth.seeds import ROBUSTNESS_DRAWS, derive_seed


def robustness(
    model, meta: dict, images: torch.Tensor, labels: np.ndarray, device, clean, seed: int = 0
) -> dict:
    """Balanced accuracy on `images` (uint8, the model's size) degraded, beside `clean`, the
    caller's balanced accuracy on the same images undegraded."""
    positive = meta["class_names"].index(meta["positive_class"])
    x = images.float() / 255.0

    def balanced_accuracy(inputs: torch.Tensor) -> float | None:
        scores = predict_proba(model, inputs, meta, device)[:, positive].numpy()
        return binary_metrics(labels, scores, positive)["balanced_accuracy"]

    rows = []
    for k, (name, unit, strengths, degrade) in enumerate(ROBUSTNESS):
        for strength in strengths:
            generator = torch.Generator().manual_seed(derive_seed(seed, ROBUSTNESS_DRAWS, k))
            value = balanced_accuracy(degrade(x, strength, generator))
            rows.append(
                {
                    "degradation": name,
                    "unit": unit,
                    "strength": strength,
                    "balanced_accuracy": value,
                    "drop": None if value is None or clean is None else round(clean - value, 6),
                }
            )
    return {"n": len(labels), "seed": seed, "clean_balanced_accuracy": clean, "rows": rows}
