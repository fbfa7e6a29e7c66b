"""Test metrics of a binary classifier, each rate with a Wilson 95 % interval.

The positive class is explicit (the paper's: without_mask). Rates whose denominator is
empty (e.g. a test set holding only one class) are None, never a made-up number.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, roc_auc_score

CONFIDENCE = 0.95


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """Wilson score interval of k successes in n trials, or None when n == 0."""
    if n == 0:
        return None
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [round(float(ci.low), 6), round(float(ci.high), 6)]


def _rate(k: int, n: int) -> dict:
    return {"value": round(k / n, 6) if n else None, "k": k, "n": n, "ci95": wilson(k, n)}


def binary_metrics(
    y_true: np.ndarray, y_score: np.ndarray, positive: int, threshold: float = 0.5
) -> dict:
    """Metrics for labels `y_true` (class indices) and `y_score` = P(positive class).

    Keys: n, sensitivity, specificity, accuracy, balanced_accuracy, f1, roc_auc, confusion.
    """
    y_true = np.asarray(y_true)
    is_pos = y_true == positive
    predicted_pos = np.asarray(y_score) >= threshold
    tp = int((is_pos & predicted_pos).sum())
    fn = int((is_pos & ~predicted_pos).sum())
    tn = int((~is_pos & ~predicted_pos).sum())
    fp = int((~is_pos & predicted_pos).sum())
    n = tp + fn + tn + fp
    sens, spec = _rate(tp, tp + fn), _rate(tn, tn + fp)
    balanced = None
    if sens["value"] is not None and spec["value"] is not None:
        balanced = round((sens["value"] + spec["value"]) / 2, 6)
    f1 = round(2 * tp / (2 * tp + fp + fn), 6) if (2 * tp + fp + fn) else None
    auc = None
    if 0 < is_pos.sum() < n:
        auc = round(float(roc_auc_score(is_pos, y_score)), 6)
    return {
        "n": n,
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": _rate(tp + tn, n),
        "balanced_accuracy": balanced,
        "f1": f1,
        "roc_auc": auc,
        "confusion": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
    }


def class_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Per-class recall (with Wilson intervals) and the full confusion matrix (rows: true
    class, columns: predicted = the most probable class), for any number of classes."""
    y_true = np.asarray(y_true)
    predicted = np.asarray(probs).argmax(1)
    counts = confusion_matrix(y_true, predicted, labels=list(range(len(class_names))))
    return {
        "per_class": {
            name: {"recall": _rate(int(counts[k, k]), int(counts[k].sum()))}
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": {"classes": list(class_names), "counts": counts.tolist()},
    }
