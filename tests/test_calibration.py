import numpy as np
import torch

from masksynth.metrics.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability,
)


def _overconfident(n=4000, factor=3.0, seed=0):
    """Labels drawn from softmax(true logits); the model reports factor x those logits."""
    gen = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, 2, generator=gen) * 1.5
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=gen)[:, 0]
    return true_logits * factor, labels.numpy()


def test_temperature_scaling_undoes_overconfidence():
    logits, labels = _overconfident()
    before = expected_calibration_error(torch.softmax(logits, 1), labels)
    temperature = fit_temperature(logits, labels)
    after = expected_calibration_error(torch.softmax(logits / temperature, 1), labels)
    assert abs(temperature - 3.0) < 0.3  # the factor the logits were blown up by
    assert before > 0.08 and after < 0.03 and after < before / 3
    # an already calibrated model keeps a temperature near 1
    assert abs(fit_temperature(logits / 3.0, labels) - 1.0) < 0.1


def test_reliability_bins_show_overconfidence():
    logits, labels = _overconfident()
    curve = reliability(torch.softmax(logits, 1), labels)
    gaps = np.array(curve["confidence"]) - np.array(curve["accuracy"])
    assert len(gaps) >= 5 and (gaps[1:] > 0).all()  # surer than right, bin after bin
