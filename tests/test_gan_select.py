"""The class selection (gan.select): the share it keeps, each fake judged on its own margin,
`sample` and the quality metrics through it (regenerable, recorded, never reused across
shares), and its refusals."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from masksynth.cli import main
from masksynth.config import gan_config
from masksynth.errors import MasksynthError
from masksynth.gan.generate import EVALUATION_SEED, generate, latents
from masksynth.gan.load import evaluation_sampler, load_generators, load_selection
from masksynth.gan.sample import sample
from masksynth.gan.select import CALIBRATION_SEED, class_margins
from masksynth.gan.train import train_gan

CPU = torch.device("cpu")
TINY = dict(g_width=8, d_width=8, batch_size=4, epochs=1, device="cpu", final_metrics=False)


@pytest.fixture(scope="module")
def ac_run(tiny_prep, tmp_path_factory):
    """quick's recipe (conditional, TAC-GAN class heads), every fake kept by default."""
    run = tmp_path_factory.mktemp("select") / "run"
    train_gan(tiny_prep, run, gan_config("quick", **TINY, class_keep=1.0))
    return run


def _fakes(generators, seed, k, rows):
    G, conditional, _ = generators[k]
    labels = torch.full((rows,), k) if conditional else None
    return generate(G, latents(seed, k, rows, 128), labels, CPU)


def test_it_keeps_about_its_share_judging_each_fake_by_its_own_class_margin(ac_run):
    state, generators = load_generators(ac_run, CPU)
    assert load_selection(ac_run, state, generators, CPU) is None  # the run keeps every fake
    selection = load_selection(ac_run, state, generators, CPU, 0.5)
    for k in (0, 1):
        # on the latents it was calibrated on, half exactly; on others, about half
        calibration = selection.kept(_fakes(generators, CALIBRATION_SEED, k, 2000), k)
        assert abs(calibration.float().mean().item() - 0.5) <= 0.001
        images = _fakes(generators, 5, k, 400)
        verdicts = selection.kept(images, k)
        assert 0.4 <= verdicts.float().mean().item() <= 0.6
        # a fake's verdict is its own, whatever else is in its batch
        alone = torch.cat([selection.kept(images[i : i + 1], k) for i in range(0, 400, 37)])
        assert torch.equal(alone, verdicts[::37])

    # the margin: D's first class head's logit for the class less the other class's
    D = selection.discriminator
    images = _fakes(generators, 5, 1, 8)
    D.eval()
    with torch.no_grad():
        _, heads = D(images.float() / 127.5 - 1, torch.full((8,), 1), with_classes=True)
    expected = heads[:, 0, 1] - heads[:, 0, 0]
    assert torch.allclose(class_margins(D, images, 1, True, CPU), expected, atol=1e-5)


def test_sample_through_the_selection_is_regenerable_recorded_and_not_reused_across_shares(
    ac_run, tmp_path
):
    out = tmp_path / "s"
    meta = sample(ac_run, out, n_per_class=20, seed=2, device="cpu", class_keep=0.5)
    record = meta["class_selection"]
    assert record["keep"] == 0.5 and set(record["thresholds"]) == {"with_mask", "without_mask"}
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    state, generators = load_generators(ac_run, CPU)
    selection = load_selection(ac_run, state, generators, CPU, 0.5)
    for k, name in enumerate(state["classes"]):
        kept_rows = [int(r["latent_index"]) for r in rows if r["class_index"] == str(k)]
        assert record["candidates"][name] == kept_rows[-1] + 1
        # the first 20 fakes the selection keeps, in latent order: the others were turned away
        drawn = _fakes(generators, 2, k, kept_rows[-1] + 1)
        verdicts = selection.kept(drawn, k)
        assert torch.nonzero(verdicts).flatten().tolist() == kept_rows
        assert len(kept_rows) == 20 and kept_rows[-1] >= 25
        # each file is its latent's fake, regenerated
        for r in (r for r in rows if r["class_index"] == str(k)):
            png = np.asarray(Image.open(out / r["file"]).convert("RGB"))
            image = drawn[int(r["latent_index"])].permute(1, 2, 0).numpy()
            assert np.array_equal(png, image)

    again = sample(ac_run, out, n_per_class=20, seed=2, device="cpu", class_keep=0.5)
    assert again.get("reused")
    every = sample(ac_run, out, n_per_class=20, seed=2, device="cpu")  # the run's own: keep 1
    assert not every.get("reused") and every["class_selection"] is None
    with open(out / "manifest.csv", newline="") as handle:
        indices = [int(r["latent_index"]) for r in csv.DictReader(handle)]
    assert indices == list(range(20)) * 2


def test_the_metrics_score_the_first_kept_fakes_of_the_evaluation_latents(ac_run):
    state, fakes = evaluation_sampler(ac_run, CPU, 0.5)
    _, generators = load_generators(ac_run, CPU)
    selection = load_selection(ac_run, state, generators, CPU, 0.5)
    drawn = _fakes(generators, EVALUATION_SEED, 0, 100)
    expected = drawn[selection.kept(drawn, 0)][:12]
    assert torch.equal(fakes(0, 12), expected)
    _, every = evaluation_sampler(ac_run, CPU)
    assert torch.equal(every(0, 12), drawn[:12])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--preset", "quick", "--class-keep", "0"], "--class-keep must be in (0, 1]"),
        (["--preset", "quick", "--class-keep", "1.5"], "--class-keep must be in (0, 1]"),
        (["--preset", "paper", "--class-keep", "0.5"], "only with --ac-weight"),
    ],
)
def test_a_class_keep_it_cannot_use_is_a_one_line_error(tiny_prep, tmp_path, capsys, args, says):
    assert main(["train-gan", str(tiny_prep), "--out", str(tmp_path / "x"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masksynth: error: ") and says in lines[0]
    assert not (tmp_path / "x").exists()


def test_sampling_a_run_without_a_class_head_by_class_is_refused(tiny_prep, ac_run, tmp_path):
    paper = tmp_path / "paper"
    train_gan(tiny_prep, paper, gan_config("paper", **TINY))
    with pytest.raises(MasksynthError, match="needs a discriminator with a class head"):
        sample(paper, tmp_path / "s", n_per_class=2, device="cpu", class_keep=0.5)
    with pytest.raises(MasksynthError, match=r"must be in \(0, 1\]"):
        sample(ac_run, tmp_path / "t", n_per_class=2, device="cpu", class_keep=0.0)
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_a_run_with_a_share_shows_the_fakes_it_hands_out_in_a_grid_of_its_own(
    tiny_prep, ac_run, tmp_path
):
    run = tmp_path / "run"
    train_gan(tiny_prep, run, gan_config("quick", **TINY, class_keep=0.5))
    state, fakes = evaluation_sampler(run, CPU)  # the run's own share
    _, every = evaluation_sampler(run, CPU, 1.0)
    for k, name in enumerate(state["classes"]):
        grid = torch.from_numpy(np.array(Image.open(run / "grids" / f"{name}_kept.png")))
        # make_grid's tiles: 64 px with 2 px of padding, 8 to a row; the top 4 rows synthetic
        tiles = grid.permute(2, 0, 1)[:, 2:, 2:].unfold(1, 64, 66).unfold(2, 64, 66)
        shown = tiles[:, :4].permute(1, 2, 0, 3, 4).reshape(32, 3, 64, 64)
        assert torch.equal(shown, fakes(k, 32))
        assert not torch.equal(shown, every(k, 32))  # not the epoch grids' every fake
    assert not list((ac_run / "grids").glob("*_kept.png"))  # every fake kept: no such grid
