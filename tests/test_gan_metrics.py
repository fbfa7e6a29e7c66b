import numpy as np
import pytest
import torch
from PIL import Image

from masksynth.data import load_split
from masksynth.metrics.gan_quality import fid, gan_metrics, kid, prdc


def test_fid_by_hand():
    real = np.array([[-1.0], [1.0]])  # mean 0, variance 2
    fake = np.array([[1.0], [3.0]])  # mean 2, variance 2
    assert fid(real, fake) == pytest.approx(4.0)  # (0-2)^2 + 2 + 2 - 2*sqrt(2*2)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    b = rng.normal(size=(400, 3)) * 2 + 1
    expected = 3 + 3 * (1 + 4 - 2 * 2)  # means differ by 1 per dim; sigma 1 vs 2
    assert fid(a, b) == pytest.approx(expected, rel=0.15)


def test_kid_and_prdc_of_identical_sets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.normal(size=(200, 8)).astype(np.float32)
    near, _ = kid(x, y, subset_size=100, subsets=20)  # unbiased: ~0 for one distribution
    far, _ = kid(x, y + 1, subset_size=100, subsets=20)
    assert far > 0.5 and far > 20 * abs(near)
    scores = prdc(x, x, k=3)
    assert scores["precision"] == 1 and scores["recall"] == 1 and scores["coverage"] == 1
    assert prdc(x, x + 100, k=3)["precision"] == 0


def _write_folder(root, images_by_class):
    for name, images in images_by_class.items():
        (root / name).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{i}.png")


def test_fid_of_real_images_against_themselves_is_zero_and_noise_is_far(tiny_prep, tmp_path):
    test = load_split(tiny_prep, "test", 64)
    same = {name: test.images[test.labels == k] for k, name in enumerate(test.class_names)}
    _write_folder(tmp_path / "same", same)
    noise = {
        name: torch.randint(
            0, 256, imgs.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        for name, imgs in same.items()
    }
    _write_folder(tmp_path / "noise", noise)
    result = gan_metrics(tmp_path / "same", tiny_prep, "test")
    noisy = gan_metrics(tmp_path / "noise", tiny_prep, "test")
    assert list(tiny_prep.glob("features/inception_test_64px_*.npz"))  # real features cached
    for name in test.class_names:
        assert abs(result["classes"][name]["fid"]) < 1.0, result
        assert noisy["classes"][name]["fid"] > 100, noisy
        assert noisy["classes"][name]["fid"] > 100 * max(result["classes"][name]["fid"], 0.01)
        assert result["classes"][name]["coverage"] == 1.0
        assert result["classes"][name]["n_real"] == result["classes"][name]["n_fake"]
