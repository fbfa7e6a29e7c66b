"""Whether a classifier's probabilities mean what they say, and temperature scaling.

Expected calibration error (ECE) is torchmetrics' top-label, L1, equal-width-bin form;
temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") divides
the logits by the one T that minimises the negative log-likelihood on held-out data. It
changes no prediction, only how sure the model says it is.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve
from torchmetrics.functional.classification import multiclass_calibration_error

ECE_BINS = 15
# T in [1/4, 20]: a val set the model gets all right pulls T towards 0 (NLL keeps falling),
# which would saturate every probability to 0 or 1; a small val set never justifies more
# than 4x sharper, and beyond 20x softer the logits carry no information
T_BOUNDS = (0.25, 20.0)


def expected_calibration_error(probs: torch.Tensor, labels, bins: int = ECE_BINS) -> float:
    """Top-label ECE of class probabilities (N, K) against class indices."""
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    value = multiclass_calibration_error(
        probs.float(), target, num_classes=probs.shape[1], n_bins=bins, norm="l1"
    )
    return round(float(value), 6)


def reliability(probs: torch.Tensor, labels, bins: int = 10) -> dict[str, list[float]]:
    """The reliability diagram's points: per confidence bin, mean confidence and accuracy."""
    confidence, predicted = probs.float().max(1)
    correct = (predicted.numpy() == np.asarray(labels)).astype(int)
    accuracy, mean_confidence = calibration_curve(
        correct, confidence.numpy(), n_bins=bins, strategy="uniform"
    )
    return {
        "confidence": [round(float(v), 6) for v in mean_confidence],
        "accuracy": [round(float(v), 6) for v in accuracy],
    }


def nll(logits: torch.Tensor, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    target = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    return float(F.cross_entropy(logits.double() / temperature, target))


def fit_temperature(logits: torch.Tensor, labels) -> float:
    """The temperature in T_BOUNDS that minimises the NLL of softmax(logits / T)."""
    low, high = (math.log(t) for t in T_BOUNDS)
    best = minimize_scalar(
        lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(low, high), method="bounded"
    )
    return round(math.exp(best.x), 6)
