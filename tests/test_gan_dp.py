import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from masksynth.cli import main
from masksynth.config import gan_config
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.dp import PrivateD
from masksynth.gan.networks import Discriminator
from masksynth.gan.pair import build_pairs
from masksynth.gan.train import train_gan

TARGET = 20.0
TINY = dict(
    g_width=8,
    d_width=8,
    batch_size=4,
    lr_g=2e-3,
    lr_d=2e-3,
    device="cpu",
    precision="fp32",
    final_metrics=False,
    log_every_steps=3,  # each log line computes epsilon (a fraction of a second)
    dp_epsilon=TARGET,
)


def _tiny(**kw):
    return gan_config("paper", **{**TINY, **kw})


@pytest.fixture(scope="module")
def dp_run(tiny_prep, tmp_path_factory):
    run = tmp_path_factory.mktemp("dp") / "run"
    return run, train_gan(tiny_prep, run, _tiny(epochs=2))


# What the CLI run below is, as a config (for comparing a resumed run with it).
COND = dict(mode="conditional", epochs=1, batch_size=8, log_every_steps=10)
COND_DP = dict(dp_epsilon=8.0, dp_delta=1e-3, dp_max_grad_norm=0.5)


@pytest.fixture(scope="module")
def cli_run(tiny_prep, tmp_path_factory):
    run = tmp_path_factory.mktemp("dp") / "cond"
    args = ["train-gan", str(tiny_prep), "--out", str(run), "--mode", "conditional"]
    args += ["--epochs", "1", "--g-width", "8", "--d-width", "8", "--batch-size", "8"]
    args += ["--device", "cpu", "--precision", "fp32", "--no-final-metrics"]
    args += ["--dp-epsilon", "8", "--dp-delta", "1e-3", "--dp-max-grad-norm", "0.5"]
    assert main(args) == 0
    return run


def test_dp_run_trains_and_records_the_epsilon_it_spent(dp_run):
    run, summary = dp_run
    assert summary["stopped"] == "done"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for unit in ("with_mask", "without_mask"):
        losses = [r["loss_d"] for r in records if r.get("unit") == unit]
        assert len(losses) >= 3 and max(losses) - min(losses) > 0.05, losses
        spent = [r["epsilon"] for r in records if r.get("unit") == unit]
        assert spent == sorted(spent) and 0 < spent[-1] <= TARGET

    meta = json.loads((run / "gan.json").read_text())
    dp = meta["dp"]
    n_train = sum(meta["train_images"].values())
    assert dp["delta"] == pytest.approx(1 / (10 * n_train))
    assert dp["target_epsilon"] == TARGET and dp["max_grad_norm"] == 1.0
    assert dp["noise_multiplier"] > 0 and 0 < dp["sample_rate"] <= 1
    # 24 images per class, batch 4: 6 steps per epoch; the plan spends the target, no more.
    assert dp["steps"] == dp["planned_steps"] == 12
    assert TARGET - 0.05 <= dp["epsilon"] <= TARGET
    assert set(dp["units"]) == {"with_mask", "without_mask"}

    state = load_checkpoint(checkpoint_path(run))
    assert state["dp"]["epsilon"] == dp["epsilon"]
    for saved in state["dp"]["units"].values():
        assert saved["history"] == [[saved["noise_multiplier"], saved["sample_rate"], 12]]


def test_dp_discriminator_has_no_batchnorm(dp_run, tiny_prep):
    config = _tiny(epochs=1)
    labels = torch.tensor([0, 0, 1, 1])
    for pair in build_pairs(config, ["with_mask", "without_mask"], labels, torch.device("cpu")):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in pair.D.modules())
        assert any(isinstance(m, nn.GroupNorm) for m in pair.D.modules())
    run, _ = dp_run
    saved = load_checkpoint(checkpoint_path(run))["units"]["with_mask"]["D"]
    assert not any("running" in key for key in saved)
    Discriminator(8, 0, "group").load_state_dict(saved)


def _private(noise_multiplier: float, max_grad_norm: float) -> tuple[PrivateD, nn.Module]:
    torch.manual_seed(0)
    D = Discriminator(8, 0, "group")
    plain = copy.deepcopy(D)  # the same weights, never hooked
    opt = torch.optim.Adam(D.parameters(), lr=1e-3)
    private = PrivateD(
        D,
        opt,
        sample_rate=0.5,
        noise_multiplier=noise_multiplier,
        planned_steps=10,
        max_grad_norm=max_grad_norm,
        batch_size=4,
    )
    return private, plain


def _backward(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> None:
    logits = D(torch.cat([real, fake]))
    targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").backward()


def test_every_image_is_clipped_real_or_fake():
    clip = 1e-3
    private, plain = _private(noise_multiplier=0.0, max_grad_norm=clip)
    D = private.hooks._module
    real, fake = torch.randn(3, 3, 64, 64), torch.randn(4, 3, 64, 64)
    _backward(D, real, fake)
    assert all(p.grad_sample.shape[0] == 7 for p in D.parameters())  # one row per image
    private.step()
    # no noise: the update is the sum of 7 clipped gradients over the batch size (4)
    norm = float(torch.cat([p.grad.flatten() for p in private.params]).norm())
    assert 0 < norm <= 7 * clip / 4 + 1e-9
    plain_norm = float(
        torch.cat(
            [
                g.flatten()
                for g in torch.autograd.grad(_plain_loss(plain, real, fake), plain.parameters())
            ]
        ).norm()
    )
    assert plain_norm > 100 * norm  # unclipped, the fake images alone would dominate
    assert private.steps == 1


def _plain_loss(D, real, fake):
    logits = D(torch.cat([real, fake]))
    targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")


def test_noise_is_added_once():
    sigma, clip, batch = 2.0, 1.0, 4
    private, _ = _private(noise_multiplier=sigma, max_grad_norm=clip)
    D = private.hooks._module
    _backward(D, torch.zeros(0, 3, 64, 64), torch.randn(4, 3, 64, 64))  # empty Poisson batch
    private.step()
    update = torch.cat([p.grad.flatten() for p in private.params])
    assert len(update) > 10_000
    # One draw of N(0, (sigma * clip)^2) over the expected batch size, not two; the clipped
    # fake gradients (sum of norms <= 4 * clip / 4) are small beside it.
    assert float(update.std()) == pytest.approx(sigma * clip / batch, rel=0.05)
    assert private.steps == 1


def test_cli_conditional_dp_run_uses_the_dp_options(cli_run):
    dp = json.loads((cli_run / "gan.json").read_text())["dp"]
    assert dp["delta"] == 1e-3 and dp["max_grad_norm"] == 0.5 and dp["target_epsilon"] == 8
    assert 7.95 <= dp["epsilon"] <= 8 and dp["sample_rate"] == pytest.approx(8 / 48)
    assert "units" not in dp  # one conditional pair


def test_resumed_dp_run_continues_the_accounting(cli_run, tiny_prep, tmp_path):
    straight = json.loads((cli_run / "gan.json").read_text())["dp"]
    run = tmp_path / "cut"
    config = dict(COND, **COND_DP)
    cut = train_gan(tiny_prep, run, _tiny(**config, max_minutes=1e-6))  # stops after 1 step
    assert cut["stopped"] == "time limit" and cut["dp"]["steps"] < 6
    done = train_gan(tiny_prep, run, _tiny(**config), resume=True)
    assert done["stopped"] == "done" and done["dp"]["steps"] == 6
    assert done["dp"]["epsilon"] == straight["epsilon"]
    assert done["dp"]["noise_multiplier"] == straight["noise_multiplier"]

    # More epochs than planned would overspend: the run stops at once, checkpoint kept.
    more = train_gan(tiny_prep, run, _tiny(**dict(config, epochs=2)), resume=True)
    assert more["stopped"] == "privacy budget"
    assert more["dp"]["epsilon"] == done["dp"]["epsilon"] and more["dp"]["steps"] == 6
    assert load_checkpoint(checkpoint_path(run))["dp"]["steps"] == 6


@pytest.mark.parametrize("norm", ["spectral", "layer"])
def test_dp_with_another_d_norm_is_a_one_line_error(tiny_prep, tmp_path, capsys, norm):
    """A private D is GroupNorm's: a norm it would silently replace is refused."""
    args = ["train-gan", str(tiny_prep), "--out", str(tmp_path / "x")]
    assert main([*args, "--dp-epsilon", "5", "--d-norm", norm]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masksynth: error: ")
    assert f"--d-norm {norm}" in lines[0]
    assert not (tmp_path / "x").exists()
