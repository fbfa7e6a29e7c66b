import csv
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from masksynth.config import gan_config
from masksynth.data.synthetic import load_synthetic
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_csv, write_csv
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.generate import generate, latents
from masksynth.gan.load import load_generators
from masksynth.gan.sample import sample
from masksynth.gan.train import train_gan


def _png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_sample_is_deterministic_and_regenerable(tiny_prep, tmp_path):
    run = tmp_path / "run"
    train_gan(
        tiny_prep,
        run,
        gan_config(
            "quick", g_width=8, d_width=8, batch_size=4, epochs=1, device="cpu", final_metrics=False
        ),
    )
    first = sample(run, tmp_path / "a", n_per_class=6, seed=3, device="cpu")
    sample(run, tmp_path / "b", n_per_class=6, seed=3, device="cpu")
    sample(run, tmp_path / "c", n_per_class=6, seed=4, device="cpu")
    for rel in first["files"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert any(
        (tmp_path / "a" / r).read_bytes() != (tmp_path / "c" / r).read_bytes()
        for r in first["files"]
    )
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "manifest.csv",
        "sample.json",
        "with_mask",
        "without_mask",
    ]

    with open(tmp_path / "a/manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    digest = file_sha256(checkpoint_path(run))
    assert {r["checkpoint_sha256"] for r in rows} == {digest}
    assert {r["generator"] for r in rows} == {"G_ema"}  # the quick preset keeps an EMA

    # Any single image can be regenerated from its manifest row alone.
    row = rows[8]
    _, generators = load_generators(run, torch.device("cpu"))
    k, i = int(row["class_index"]), int(row["latent_index"])
    z = latents(int(row["seed"]), k, i + 1, 128)[i : i + 1]
    G, conditional, _ = generators[k]
    labels = torch.tensor([k]) if conditional else None  # the quick preset is conditional
    image = generate(G, z, labels, torch.device("cpu"))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(image, _png(tmp_path / "a" / row["file"]))


def test_a_sample_is_reused_only_for_the_same_checkpoint_seed_and_count(tiny_prep, tmp_path):
    run = tmp_path / "run"
    config = gan_config(
        "paper", g_width=8, d_width=8, batch_size=4, epochs=1, device="cpu", final_metrics=False
    )
    train_gan(tiny_prep, run, config)
    first = sample(run, tmp_path / "s", n_per_class=3, device="cpu")
    target = tmp_path / "s/with_mask/with_mask_00000.png"
    stamp = target.stat().st_mtime_ns
    again = sample(run, tmp_path / "s", n_per_class=3, device="cpu")
    assert again["reused"] and target.stat().st_mtime_ns == stamp
    assert again["sample_id"] == first["sample_id"]
    assert {r["generator"] for r in read_csv(tmp_path / "s/manifest.csv")} == {"G"}

    # fewer images: a new sample, and none of the old files stay behind
    fewer = sample(run, tmp_path / "s", n_per_class=2, device="cpu")
    assert not fewer.get("reused") and fewer["sample_id"] != first["sample_id"]
    assert sorted(p.name for p in (tmp_path / "s/with_mask").iterdir()) == [
        "with_mask_00000.png",
        "with_mask_00001.png",
    ]
    images, _ = load_synthetic(tmp_path / "s", ["with_mask", "without_mask"], 64)
    assert len(images) == 4
    assert not list(tmp_path.glob(".s.*"))  # no temporary folder left beside it

    # a checkpoint trained further: the same count and seed are sampled anew
    train_gan(tiny_prep, run, dataclasses.replace(config, epochs=2), resume=True)
    later = sample(run, tmp_path / "s", n_per_class=2, device="cpu")
    assert not later.get("reused") and later["sample_id"] != fewer["sample_id"]
    assert later["inputs"]["checkpoint_sha256"] == file_sha256(checkpoint_path(run))


def test_sample_refuses_a_folder_that_holds_something_else(tiny_run_for_sampling, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"someone's photo")
    with pytest.raises(MasksynthError, match="not a masksynth sample"):
        sample(tiny_run_for_sampling, tmp_path / "photos", n_per_class=2, device="cpu")
    assert (tmp_path / "photos" / "mine.jpg").read_bytes() == b"someone's photo"


@pytest.fixture(scope="module")
def tiny_run_for_sampling(tiny_prep, tmp_path_factory):
    run = tmp_path_factory.mktemp("sampling") / "run"
    config = gan_config(
        "paper", g_width=8, d_width=8, batch_size=4, epochs=1, device="cpu", final_metrics=False
    )
    train_gan(tiny_prep, run, config)
    return run


def _png_file(path, size=(64, 64), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)


def test_a_synthetic_folder_holds_only_what_its_manifest_lists(tiny_run_for_sampling, tmp_path):
    folder = tmp_path / "s"
    sample(tiny_run_for_sampling, folder, n_per_class=2, device="cpu")
    classes = ["with_mask", "without_mask"]
    _png_file(folder / "with_mask" / "stray_from_elsewhere.png")  # not in the manifest
    images, labels = load_synthetic(folder, classes, 64)
    assert len(images) == 4 and labels.tolist() == [0, 0, 1, 1]

    rows = read_csv(folder / "manifest.csv")
    rows[0]["file"] = "../../outside.png"
    _png_file(tmp_path / "outside.png")
    write_csv(folder / "manifest.csv", list(rows[0]), rows)
    with pytest.raises(MasksynthError, match="outside the folder"):
        load_synthetic(folder, classes, 64)


@pytest.mark.parametrize(
    ("odd", "message"),
    [
        (dict(size=(48, 48)), "one size and colour mode"),
        (dict(mode="L"), "one size and colour mode"),
    ],
)
def test_a_folder_of_mixed_images_is_a_clear_error(tmp_path, odd, message):
    for k in range(3):
        _png_file(tmp_path / "with_mask" / f"{k}.png")
        _png_file(tmp_path / "without_mask" / f"{k}.png")
    _png_file(tmp_path / "without_mask" / "odd.png", **odd)
    with pytest.raises(MasksynthError, match=message) as error:
        load_synthetic(tmp_path, ["with_mask", "without_mask"], 64)
    assert "odd.png" in str(error.value) and "\n" not in str(error.value)


def test_non_square_synthetic_images_are_a_clear_error(tmp_path):
    for label in ("with_mask", "without_mask"):
        _png_file(tmp_path / label / "wide.png", size=(64, 48))
    with pytest.raises(MasksynthError, match="must be square"):
        load_synthetic(tmp_path, ["with_mask", "without_mask"], 64)
