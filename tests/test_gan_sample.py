import csv

import numpy as np
import torch
from PIL import Image

from masksynth.config import gan_config
from masksynth.fileio import read_csv
from masksynth.gan.checkpoint import checkpoint_path, file_sha256
from masksynth.gan.generate import generate, latents
from masksynth.gan.sample import load_generators, sample
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


def test_identical_sample_is_reused(tiny_prep, tmp_path):
    run = tmp_path / "run"
    train_gan(
        tiny_prep,
        run,
        gan_config(
            "paper", g_width=8, d_width=8, batch_size=4, epochs=1, device="cpu", final_metrics=False
        ),
    )
    sample(run, tmp_path / "s", n_per_class=3, device="cpu")
    target = tmp_path / "s/with_mask/with_mask_00000.png"
    stamp = target.stat().st_mtime_ns
    meta = sample(run, tmp_path / "s", n_per_class=3, device="cpu")
    assert target.stat().st_mtime_ns == stamp and meta["n_per_class"] == 3
    assert {r["generator"] for r in read_csv(tmp_path / "s/manifest.csv")} == {"G"}
