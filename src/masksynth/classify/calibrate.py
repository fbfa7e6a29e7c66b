"""Temperature scaling of a trained classifier on the validation split, stored in its
checkpoint so that every prediction path (evaluate, predict, serve) applies it."""

from __future__ import annotations

from pathlib import Path

import torch

from masksynth.classify.checkpoint import load_classifier, predict_logits, save_classifier
from masksynth.config import VAL
from masksynth.metrics.calibration import expected_calibration_error, fit_temperature, nll


def calibrate_checkpoint(path: Path, images: torch.Tensor, labels, device) -> dict:
    """Fit T on (images, labels) of the val split, write it into the checkpoint at `path`,
    and return what was fitted: T and the val ECE before and after."""
    model, meta = load_classifier(path, device)
    logits = predict_logits(model, images, meta, device)
    temperature = fit_temperature(logits, labels)
    record = {
        "temperature": temperature,
        "fitted_on": VAL,
        "n": len(labels),
        # T minimises the NLL, not the ECE: on a small val set the ECE may even rise
        "nll_before": round(nll(logits, labels), 6),
        "nll_after": round(nll(logits, labels, temperature), 6),
        "ece_before": expected_calibration_error(torch.softmax(logits, 1), labels),
        "ece_after": expected_calibration_error(torch.softmax(logits / temperature, 1), labels),
    }
    meta.pop("format", None)
    save_classifier(path, model, {**meta, "temperature": temperature, "calibration": record})
    return record
