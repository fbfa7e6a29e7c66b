"""The auxiliary classifier (AC-GAN) option: what each step's loss adds, what learns from
what, the CLI's refusals, and that old runs without it still load."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from masksynth.cli import main
from masksynth.config import gan_config
from masksynth.errors import MasksynthError
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from masksynth.gan.load import load_generators
from masksynth.gan.loss import Objective, d_loss, g_loss
from masksynth.gan.pair import build_pairs
from masksynth.gan.train import train_gan

TINY_AC = dict(
    mode="conditional",
    d_norm="layer",
    ac_weight=2.0,
    g_width=8,
    d_width=8,
    batch_size=4,
    device="cpu",
    precision="fp32",
    final_metrics=False,
    log_every_steps=2,
)


def _identity(x):
    return x


@pytest.mark.parametrize("twin", [False, True])
def test_each_step_adds_the_weighted_class_losses_and_each_head_learns_its_own_images(twin):
    """The classifier learns the reals' classes, its twin (TAC-GAN) the fakes'; G's loss adds
    the classifier's cross-entropy on its fakes and subtracts the twin's."""
    torch.manual_seed(0)
    config = gan_config("paper", **TINY_AC, ac_twin=twin)
    pair = build_pairs(config, ["a", "b"], torch.tensor([0, 1] * 4), torch.device("cpu"))[0]
    real = torch.rand(6, 3, 64, 64) * 2 - 1
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    fake_labels = torch.tensor([1, 0, 0, 1, 1, 0])
    fake = pair.G(torch.randn(6, 128, 1, 1), fake_labels)
    objective = Objective("bce", ac_weight=2.0, ac_twin=twin)
    no_autocast = torch.autocast("cpu", enabled=False)

    D = copy.deepcopy(pair.D)  # the D the step starts from, for the expected losses
    d_real, heads_real = D(real, labels, with_classes=True)
    d_fake, heads_fake = D(fake.detach(), fake_labels, with_classes=True)
    class_loss = 2.0 * F.cross_entropy(heads_real[:, 0], labels)
    if twin:
        class_loss = class_loss + 2.0 * F.cross_entropy(heads_fake[:, 1], fake_labels)
    expected = d_loss("bce", d_real, d_fake) + class_loss
    (expected_head_grad,) = torch.autograd.grad(class_loss, D.classify.weight)
    loss, _, _ = objective.discriminator_step(
        pair, real, labels, fake, fake_labels, _identity, no_autocast
    )
    assert torch.allclose(loss, expected, atol=1e-6)
    # the heads' gradients are those terms alone: fakes never teach the classifier, nor
    # reals the twin
    assert torch.allclose(pair.D.classify.weight.grad, expected_head_grad, atol=1e-7)

    D = copy.deepcopy(pair.D)
    d_gen, heads = D(fake, fake_labels, with_classes=True)
    expected = g_loss("bce", d_gen) + 2.0 * F.cross_entropy(heads[:, 0], fake_labels)
    if twin:
        expected = expected - 2.0 * F.cross_entropy(heads[:, 1], fake_labels)
    loss = objective.generator_step(pair, fake, fake_labels, _identity, no_autocast)
    assert torch.allclose(loss, expected, atol=1e-6)
    fields = objective.log_fields(pair)
    assert set(fields) == {"ac_real", "ac_fake"} and all(0 <= v <= 1 for v in fields.values())
    assert objective.log_fields(pair) == {}  # counted afresh after each log line


def test_an_ac_run_logs_its_class_hits_and_resumes_to_the_same_weights(tiny_prep, tmp_path):
    config = gan_config(
        "paper", **TINY_AC, ac_twin=True, epochs=2, deterministic=True, ema_decay=0.9
    )
    train_gan(tiny_prep, tmp_path / "straight", config)
    records = [json.loads(line) for line in (tmp_path / "straight/metrics.jsonl").open()]
    hits = [r["ac_real"] for r in records if "ac_real" in r]
    assert len(hits) >= 5 and all(0 <= h <= 1 for h in hits)

    train_gan(
        tiny_prep,
        tmp_path / "halves",
        gan_config("paper", **TINY_AC, ac_twin=True, epochs=1, deterministic=True, ema_decay=0.9),
    )
    train_gan(tiny_prep, tmp_path / "halves", config, resume=True)
    a = load_checkpoint(checkpoint_path(tmp_path / "straight"))["units"]["all"]
    b = load_checkpoint(checkpoint_path(tmp_path / "halves"))["units"]["all"]
    assert "classify.weight" in a["D"]
    for part in ("G", "D", "G_ema"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)

    # another weight is another recipe: a resume with it is refused
    with pytest.raises(MasksynthError, match="other settings.*ac_weight"):
        train_gan(
            tiny_prep,
            tmp_path / "halves",
            gan_config("paper", **{**TINY_AC, "ac_weight": 1.0, "ac_twin": True, "epochs": 3}),
            resume=True,
        )


def test_a_run_from_before_the_option_still_loads(tiny_prep, tmp_path):
    run = tmp_path / "old"
    train_gan(tiny_prep, run, gan_config("paper", **{**TINY_AC, "ac_weight": 0.0, "epochs": 1}))
    state = load_checkpoint(checkpoint_path(run))
    del state["config"]["ac_weight"], state["config"]["ac_twin"]  # what an older one wrote
    state.pop("format")
    save_checkpoint(checkpoint_path(run), state)
    _, generators = load_generators(run, torch.device("cpu"))
    assert generators[0][0] is generators[1][0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ac-weight", "-1"], "--ac-weight must be >= 0"),
        (["--ac-weight", "1"], "--mode conditional"),  # the paper's preset: per-class pairs
        (
            ["--ac-weight", "1", "--mode", "conditional", "--discriminator", "projected"],
            "the DCGAN discriminator",
        ),
        (["--ac-weight", "1", "--mode", "conditional", "--dp-epsilon", "5"], "--ac-weight 0"),
        (["--ac-twin", "--mode", "conditional"], "set --ac-weight"),
    ],
)
def test_an_ac_weight_it_cannot_train_is_a_one_line_error(tiny_prep, tmp_path, capsys, args, says):
    assert main(["train-gan", str(tiny_prep), "--out", str(tmp_path / "x"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masksynth: error: ") and says in lines[0]
    assert not (tmp_path / "x").exists()
