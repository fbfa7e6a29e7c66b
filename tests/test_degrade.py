import math

import pytest
import torch

from masksynth.classify.degrade import (
    ROBUSTNESS,
    SKIN,
    Degrade,
    blur,
    crop_jitter,
    desaturate,
    downscale,
    jpeg,
    lighting,
    noise,
    occlude,
    rotate,
)


def _faces(n=4, side=64, seed=0) -> torch.Tensor:
    """Smooth random images with some fine texture, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, side, side, generator=gen)).clamp(0, 1)


def _gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_downscale_removes_detail_finer_than_the_small_side_and_keeps_the_size():
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2
    x = checker.float().expand(1, 3, 64, 64).clone()
    small = downscale(x, 16)
    assert small.shape == x.shape
    assert (small - 0.5).abs().max() < 0.02  # a 1 px pattern cannot survive 16 px
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(downscale(flat, 24), flat, atol=1e-6)
    x = _faces()
    assert (downscale(x, 24) - x).abs().mean() > (downscale(x, 48) - x).abs().mean()


def test_blur_spreads_a_point_with_the_stated_sigma():
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 16] = 1.0
    for sigma in (1.0, 2.0):
        y = blur(x, sigma)[0, 0]
        assert y.sum() == pytest.approx(1.0, abs=1e-3)
        offsets = (torch.arange(33) - 16.0) ** 2
        variance = float((y.sum(0) * offsets).sum() / y.sum())
        assert math.sqrt(variance) == pytest.approx(sigma, rel=0.05)


def test_jpeg_is_a_real_lossy_round_trip_worse_at_lower_quality():
    x = _faces()
    err30, err50, err95 = ((jpeg(x, q) - x).abs().mean() for q in (30, 50, 95))
    assert err30 > err50 > err95 > 0
    assert err30 < 0.1  # compressed, still the same picture
    assert torch.equal(jpeg(x, 30), jpeg(x, 30))  # deterministic


def test_noise_has_the_stated_strength_and_follows_the_seed():
    x = torch.full((2, 3, 64, 64), 0.5)
    y = noise(x, 0.05, _gen(1))
    assert (y - x).std() == pytest.approx(0.05, rel=0.05)
    assert torch.equal(y, noise(x, 0.05, _gen(1)))
    assert not torch.equal(y, noise(x, 0.05, _gen(2)))


def test_lighting_scales_exposure_and_bends_the_tone_curve():
    x = torch.full((1, 3, 4, 4), 0.25)
    assert torch.allclose(lighting(x, 1.0, 1.0), x)
    assert torch.allclose(lighting(x, 2.0, 1.0), torch.full_like(x, 0.5))
    assert torch.allclose(lighting(x, 1.0, 0.5), torch.full_like(x, 0.5))  # 0.25 ** 0.5


def test_a_hand_covers_about_the_stated_share_in_skin_tones_low_on_the_face():
    x = torch.zeros(64, 3, 64, 64)  # black: every changed pixel is the hand
    y = occlude(x, 0.15, _gen(3))
    covered = (y != x).any(1)
    # the ellipse can reach past the border, so a little less than the share on average
    assert 0.08 < covered.float().mean() <= 0.16
    rows = torch.arange(64, dtype=torch.float)[None, :, None].expand_as(covered)
    assert float(rows[covered].mean()) > 64 / 3  # the lower two thirds
    colours = y.permute(0, 2, 3, 1)[covered]
    # each colour is a skin tone times a shade in [0.85, 1.15]: R > G > B
    assert (colours[:, 0] >= colours[:, 1]).all() and (colours[:, 1] >= colours[:, 2]).all()
    assert colours.max() <= 1 and SKIN.min() * 0.85 - 1e-6 <= colours.min()
    assert torch.equal(y, occlude(x, 0.15, _gen(3)))


def test_desaturation_to_zero_is_grey_scale_and_keeps_brightness():
    x = _faces()
    grey = desaturate(x, 0.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # ITU-R 601, as a camera's
    assert torch.allclose(grey[:, 0], luma, atol=1e-3)
    assert torch.allclose(desaturate(x, 1.0), x)
    half = desaturate(x, 0.5)
    assert torch.allclose(half, (x + grey) / 2, atol=1e-5)


def test_rotation_turns_the_image_by_the_stated_angle():
    x = torch.zeros(1, 1, 65, 65)
    x[0, 0, 32, 52] = 1.0  # 20 px right of the centre
    y = rotate(x, 20.0)[0, 0]
    cy, cx = (float((y.sum(1 - d) * torch.arange(65)).sum() / y.sum()) for d in (0, 1))
    angle = math.degrees(math.atan2(-(cy - 32), cx - 32))  # rows grow downwards
    assert abs(abs(angle) - 20) < 2


def test_crop_jitter_moves_each_box_by_at_most_the_share_and_follows_the_seed():
    x = torch.zeros(32, 1, 64, 64)
    x[:, :, 31:33, 31:33] = 1.0
    y = crop_jitter(x, 0.15, _gen(4))
    assert torch.equal(y, crop_jitter(x, 0.15, _gen(4)))
    grid = torch.arange(64, dtype=torch.float)
    mass = y.sum((1, 2, 3))
    cy = (y.sum((1, 3)) * grid).sum(1) / mass
    cx = (y.sum((1, 2)) * grid).sum(1) / mass
    moved = torch.maximum((cy - 31.5).abs(), (cx - 31.5).abs())
    assert moved.max() <= 0.15 * 64 * 1.2 + 1  # the shift, plus what the zoom adds
    assert moved.mean() > 1  # it does move


def test_the_robustness_table_is_deterministic_for_a_seed():
    x = _faces()
    for _name, _unit, strengths, degrade in ROBUSTNESS:
        for s in strengths:
            a, b = degrade(x, s, _gen(5)), degrade(x, s, _gen(5))
            assert a.shape == x.shape and torch.equal(a, b)
            assert (a - x).abs().mean() > 1e-3  # each strength changes the images


def test_training_degradation_follows_its_seed_and_is_off_at_p_zero():
    x = _faces(16)
    augment = Degrade(p=0.5)
    a, b = augment(x, _gen(6)), augment(x, _gen(6))
    assert torch.equal(a, b) and not torch.equal(a, augment(x, _gen(7)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a != x).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # untouched by all eight at p 0.5: 1 in 256
    assert torch.equal(Degrade(p=0.0)(x, _gen(6)), x)
    everything = Degrade(p=1.0)(x, _gen(6))  # grey comes last: the hand and noise turn grey
    assert torch.equal(everything[:, 0], everything[:, 1])
    grey = (a[:, 0] == a[:, 1]).flatten(1).all(1) & (a[:, 1] == a[:, 2]).flatten(1).all(1)
    assert 0 < grey.sum() < len(x)  # some images at p 0.5, not all
