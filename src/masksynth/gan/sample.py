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
import os
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
DROPPED_FIELDS = (
    *MANIFEST_FIELDS[1:],
    "reason",
    "identity_cosine",
    "pixel_distance",
    "pixel_ratio",
    "nearest_train",
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
    run_dir: str | Path,
    out_dir: str | Path,
    n_per_class: int,
    seed: int = 0,
    device: str = "auto",
    privacy_filter: bool = False,
    prep_dir: str | Path | None = None,
    max_candidates: int = 10,
) -> dict:
    """Write n_per_class PNGs per class and manifest.csv; reuse an identical earlier sample.

    `privacy_filter`: drop images too close to a training photo (see privacy.release_filter)
    and draw further latents until n_per_class pass, at most max_candidates x n_per_class.
    """
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
        if (
            (old.get("checkpoint_sha256"), old.get("seed"), old.get("n_per_class"))
            == (
                digest,
                seed,
                n_per_class,
            )
            and old.get("privacy_filter", {}).get("on", False) == privacy_filter
            and all((out_dir / f).is_file() for f in old.get("files", []))
        ):
            log.info("%s already holds this sample: reusing it", out_dir)
            return old
    torch_device = pick_device(device)
    state, generators = load_generators(run_dir, torch_device)
    classes, z_dim = state["classes"], state["config"]["z_dim"]
    release_filter = _release_filter(run_dir, prep_dir) if privacy_filter else None
    rows, files, dropped = [], [], []
    for k, name in enumerate(classes):
        G, conditional, which = generators[k]
        kept, tried = 0, 0
        bar = tqdm(total=n_per_class, desc=f"sample {name}", unit="img", dynamic_ncols=True)
        while kept < n_per_class:
            if tried >= max_candidates * n_per_class:
                raise MasksynthError(
                    f"only {kept} of {n_per_class} {name} images passed the privacy filter "
                    f"after {tried} candidates: the GAN reproduces its training photos; "
                    f"see {out_dir / 'dropped.csv'} and audit it (masksynth audit)"
                )
            # latent i is row i of the class's latent block, however many are drawn
            count = (n_per_class - kept) if release_filter is None else n_per_class
            z = latents(seed, k, tried + count, z_dim)[tried:]
            labels = torch.full((count,), k) if conditional else None
            images = generate(G, z, labels, torch_device)
            checks = release_filter.check(images, k) if release_filter else [{}] * count
            for j, (image, check) in enumerate(zip(images, checks, strict=True)):
                record = {
                    "label": name,
                    "class_index": k,
                    "seed": seed,
                    "latent_index": tried + j,
                    "generator": which,
                    "checkpoint_sha256": digest,
                    "epoch": state["epoch"],
                }
                if check.get("reason"):
                    dropped.append({**record, **check})
                    continue
                if kept == n_per_class:
                    break
                rel = f"{name}/{name}_{kept:05d}.png"
                _write_png(out_dir / rel, image)
                files.append(rel)
                rows.append({"file": rel, **record})
                kept += 1
                bar.update(1)
            tried += count
        bar.close()
    os.sync()  # every PNG is on disk before the manifest that lists them
    write_csv(out_dir / "manifest.csv", MANIFEST_FIELDS, rows)
    filter_info = {"on": privacy_filter}
    if release_filter is not None:
        write_csv(out_dir / "dropped.csv", DROPPED_FIELDS, dropped)
        filter_info.update(
            release_filter.settings(),
            dropped={c: sum(d["label"] == c for d in dropped) for c in classes},
            candidates={c: sum(r["label"] == c for r in rows + dropped) for c in classes},
        )
        for c in classes:
            log.info(
                "privacy filter: %s kept %d of %d candidates",
                c,
                n_per_class,
                filter_info["candidates"][c],
            )
    meta = {
        "stage": "sample",
        "run_dir": str(run_dir.resolve()),
        "checkpoint_sha256": digest,
        "epoch": state["epoch"],
        "seed": seed,
        "n_per_class": n_per_class,
        "classes": classes,
        "files": files,
        "privacy_filter": filter_info,
        **run_record(),
    }
    write_json(previous, meta)
    return meta


def _release_filter(run_dir: Path, prep_dir: str | Path | None):
    from masksynth.config import AuditConfig
    from masksynth.privacy.release_filter import build_filter

    if prep_dir is None:
        gan = read_json(run_dir / "gan.json") if (run_dir / "gan.json").is_file() else {}
        prep_dir = gan.get("prep_dir")
        if not prep_dir or not Path(prep_dir).is_dir():
            raise MasksynthError(
                f"--privacy-filter needs the GAN's prepared folder: {run_dir}/gan.json does not "
                "name one that exists; pass --prep PREP_DIR"
            )
    return build_filter(prep_dir, AuditConfig())


def _write_png(path: Path, image: torch.Tensor) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    with atomic_open(path, "wb", sync=False) as handle:  # one os.sync() before the manifest
        handle.write(buffer.getvalue())
