"""The `sample` stage: a synthetic ImageFolder from a trained GAN, every image regenerable.

Image i of class c is G(z_i) where z_i is row i of the latent block drawn from
(seed, class index); the manifest records the checkpoint's sha256, seed and row, so any
image can be regenerated bit for bit on the same machine. The EMA generator is used when
the run has one. Generation is in fp32 and eval mode, so an image does not depend on the
other images of its batch.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from masksynth.config import GanConfig
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open, read_json, write_csv, write_json
from masksynth.gan.checkpoint import checkpoint_path, file_sha256, load_checkpoint
from masksynth.gan.generate import generate, latents
from masksynth.gan.train import build_generator
from masksynth.runinfo import run_record

log = logging.getLogger(__name__)
MANIFEST_FIELDS = (
    "file",
    "label",
    "class_index",
    "seed",
    "latent_index",
    "generator",
    "checkpoint_sha256",
    "epoch",
)


def load_generators(run_dir: Path, device: torch.device) -> tuple[dict, dict[int, tuple]]:
    """The checkpoint state and, per class index, (generator, conditional?, which weights)."""
    path = checkpoint_path(run_dir)
    state = load_checkpoint(path, "cpu")
    config = GanConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()}
    )
    classes = state["classes"]
    generators = {}
    for name, class_index in state["unit_classes"].items():
        saved = state["units"][name]
        which = "G_ema" if "G_ema" in saved else "G"
        G = build_generator(config, len(classes))
        G.load_state_dict(saved[which])
        G.to(device).eval()
        for k in range(len(classes)) if class_index is None else [class_index]:
            generators[k] = (G, class_index is None, which)
    return state, generators


def sample(
    run_dir: str | Path, out_dir: str | Path, n_per_class: int, seed: int = 0, device: str = "auto"
) -> dict:
    """Write n_per_class PNGs per class and manifest.csv; reuse an identical earlier sample."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if n_per_class < 1:
        raise MasksynthError("--n-per-class must be at least 1")
    ckpt = checkpoint_path(run_dir)
    if not ckpt.is_file():
        raise MasksynthError(f"{run_dir} holds no GAN checkpoint: run 'masksynth train-gan' first")
    digest = file_sha256(ckpt)
    previous = out_dir / "sample.json"
    if previous.is_file():
        old = read_json(previous)
        if (old.get("checkpoint_sha256"), old.get("seed"), old.get("n_per_class")) == (
            digest,
            seed,
            n_per_class,
        ) and all((out_dir / f).is_file() for f in old.get("files", [])):
            log.info("%s already holds this sample: reusing it", out_dir)
            return old
    torch_device = pick_device(device)
    state, generators = load_generators(run_dir, torch_device)
    classes, z_dim = state["classes"], state["config"]["z_dim"]
    rows, files = [], []
    for k, name in enumerate(classes):
        G, conditional, which = generators[k]
        z = latents(seed, k, n_per_class, z_dim)
        labels = torch.full((n_per_class,), k) if conditional else None
        images = generate(G, z, labels, torch_device)
        for i, image in enumerate(
            tqdm(images, desc=f"sample {name}", unit="img", dynamic_ncols=True)
        ):
            rel = f"{name}/{name}_{i:05d}.png"
            _write_png(out_dir / rel, image)
            files.append(rel)
            rows.append(
                {
                    "file": rel,
                    "label": name,
                    "class_index": k,
                    "seed": seed,
                    "latent_index": i,
                    "generator": which,
                    "checkpoint_sha256": digest,
                    "epoch": state["epoch"],
                }
            )
    write_csv(out_dir / "manifest.csv", MANIFEST_FIELDS, rows)
    meta = {
        "stage": "sample",
        "run_dir": str(run_dir.resolve()),
        "checkpoint_sha256": digest,
        "epoch": state["epoch"],
        "seed": seed,
        "n_per_class": n_per_class,
        "classes": classes,
        "files": files,
        **run_record(),
    }
    write_json(previous, meta)
    return meta


def _write_png(path: Path, image: torch.Tensor) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
