"""The `sample` stage: a synthetic ImageFolder from a trained GAN, every image regenerable.

Image i of class c is G(z_i) where z_i is row i of the latent block drawn from
(seed, class index); the manifest records the checkpoint's sha256, seed and row, so any
image can be regenerated bit for bit on the same machine. The EMA generator is used when
the run has one. Generation is in fp32 and eval mode, so an image does not depend on the
other images of its batch.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from masksynth.config import AuditConfig, GanConfig
from masksynth.data.cache import read_prepared
from masksynth.data.synthetic import MANIFEST, SAMPLE_RECORD, listed_files
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_csv, write_json
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.generate import generate, latents
from masksynth.gan.train import build_generator
from masksynth.provenance import changes, digest
from masksynth.runinfo import run_record
from masksynth.torchio import load_weights

log = logging.getLogger(__name__)
MANIFEST_FIELDS = (
    "file",
    "sha256",
    "label",
    "class_index",
    "seed",
    "latent_index",
    "generator",
    "checkpoint_sha256",
    "epoch",
)
DROPPED_FIELDS = (
    *MANIFEST_FIELDS[2:],
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
    config = GanConfig.from_dict(state["config"])
    classes = state["classes"]
    generators = {}
    for name, class_index in state["unit_classes"].items():
        saved = state["units"][name]
        which = "G_ema" if "G_ema" in saved else "G"
        G = build_generator(config, len(classes))
        load_weights(G, saved.get(which), path, f"GAN checkpoint's {which} of {name!r}")
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

    The sample is written into a temporary folder beside `out_dir` and renamed into place,
    so `out_dir` only ever holds one complete sample. `privacy_filter`: drop images too close
    to a training photo (see privacy.release_filter) and draw further latents until
    n_per_class pass, at most max_candidates x n_per_class.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if n_per_class < 1:
        raise MasksynthError("--n-per-class must be at least 1")
    ckpt = checkpoint_path(run_dir)
    if not ckpt.is_file():
        raise MasksynthError(f"{run_dir} holds no GAN checkpoint: run 'masksynth train-gan' first")
    _refuse_foreign_folder(out_dir)
    inputs = {
        "checkpoint_sha256": file_sha256(ckpt),
        "seed": seed,
        "n_per_class": n_per_class,
        "privacy_filter": None,
    }
    if privacy_filter:
        prep_dir = _filter_prep_dir(run_dir, prep_dir)
        inputs["privacy_filter"] = {
            "prepared": read_prepared(prep_dir)["fingerprint"],
            "settings": _filter_settings(AuditConfig()),
            "max_candidates": max_candidates,
        }
    previous = _read_record(out_dir)
    if previous:
        why = changes(previous.get("inputs"), inputs)
        if not why and _complete(out_dir):
            log.info("%s already holds this sample: reusing it", out_dir)
            return {**previous, "reused": True}
        log.info("%s: sampling anew (%s)", out_dir, "; ".join(why) or "files missing")

    torch_device = pick_device(device)
    state, generators = load_generators(run_dir, torch_device)
    release_filter = _release_filter(prep_dir) if privacy_filter else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        rows, dropped = _draw(
            work, state, generators, inputs, release_filter, max_candidates, torch_device
        )
        meta = _write_records(work, run_dir, state, inputs, rows, dropped, release_filter)
        os.sync()  # every file is on disk before the folder appears under its name
        _swap_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return meta


def _draw(work, state, generators, inputs, release_filter, max_candidates, device):
    """Generate (and filter) the images into `work`; the manifest rows and dropped rows."""
    classes, z_dim, seed = state["classes"], state["config"]["z_dim"], inputs["seed"]
    n_per_class = inputs["n_per_class"]
    rows, dropped = [], []
    for k, name in enumerate(classes):
        G, conditional, which = generators[k]
        (work / name).mkdir()
        kept, tried = 0, 0
        bar = tqdm(total=n_per_class, desc=f"sample {name}", unit="img", dynamic_ncols=True)
        while kept < n_per_class:
            if tried >= max_candidates * n_per_class:
                raise MasksynthError(
                    f"only {kept} of {n_per_class} {name} images passed the privacy filter "
                    f"after {tried} candidates: the GAN reproduces its training photos; "
                    "audit it (masksynth audit) or train it differently"
                )
            # latent i is row i of the class's latent block, however many are drawn
            count = (n_per_class - kept) if release_filter is None else n_per_class
            z = latents(seed, k, tried + count, z_dim)[tried:]
            labels = torch.full((count,), k) if conditional else None
            images = generate(G, z, labels, device)
            checks = release_filter.check(images, k) if release_filter else [{}] * count
            for j, (image, check) in enumerate(zip(images, checks, strict=True)):
                record = {
                    "label": name,
                    "class_index": k,
                    "seed": seed,
                    "latent_index": tried + j,
                    "generator": which,
                    "checkpoint_sha256": inputs["checkpoint_sha256"],
                    "epoch": state["epoch"],
                }
                if check.get("reason"):
                    dropped.append({**record, **check})
                    continue
                if kept == n_per_class:
                    break
                rel = f"{name}/{name}_{kept:05d}.png"
                sha = _write_png(work / rel, image)
                rows.append({"file": rel, "sha256": sha, **record})
                kept += 1
                bar.update(1)
            tried += count
        bar.close()
    return rows, dropped


def _write_records(work, run_dir, state, inputs, rows, dropped, release_filter) -> dict:
    classes = state["classes"]
    write_csv(work / MANIFEST, MANIFEST_FIELDS, rows)
    filter_info: dict = {"on": release_filter is not None}
    if release_filter is not None:
        write_csv(work / "dropped.csv", DROPPED_FIELDS, dropped)
        filter_info.update(
            release_filter.settings(),
            dropped={c: sum(d["label"] == c for d in dropped) for c in classes},
            candidates={c: sum(r["label"] == c for r in rows + dropped) for c in classes},
        )
        for c in classes:
            log.info(
                "privacy filter: %s kept %d of %d candidates",
                c,
                inputs["n_per_class"],
                filter_info["candidates"][c],
            )
    meta = {
        "stage": "sample",
        # the sample's identity: every later stage records it and checks it before reuse
        "sample_id": digest([(r["file"], r["sha256"]) for r in rows]),
        "inputs": inputs,
        "run_dir": str(run_dir.resolve()),
        # `work` is renamed to the sample folder beside it: the GAN is found after a move too
        "run_dir_relative": os.path.relpath(run_dir.resolve(), work.resolve()),
        "checkpoint_sha256": inputs["checkpoint_sha256"],
        "prep_fingerprint": state.get("prep_fingerprint"),
        "epoch": state["epoch"],
        "seed": inputs["seed"],
        "n_per_class": inputs["n_per_class"],
        "classes": classes,
        "files": [r["file"] for r in rows],
        "privacy_filter": filter_info,
        **run_record(),
    }
    write_json(work / SAMPLE_RECORD, meta)
    return meta


def _read_record(out_dir: Path) -> dict:
    try:
        return read_json(out_dir / SAMPLE_RECORD)
    except (OSError, ValueError):
        return {}


def _complete(out_dir: Path) -> bool:
    try:
        listed_files(out_dir)
    except MasksynthError:
        return False
    return True


def _refuse_foreign_folder(out_dir: Path) -> None:
    """A sample replaces an earlier sample, never a folder of something else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MasksynthError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / SAMPLE_RECORD).is_file():
        raise MasksynthError(
            f"--out {out_dir} already holds files that are not a masksynth sample: "
            "choose an empty or new folder"
        )


def _remove_leftovers(out_dir: Path) -> None:
    """Temporary folders of a sample that was killed before it was renamed into place."""
    for prefix in ("partial", "old"):
        for stale in out_dir.parent.glob(f".{out_dir.name}.{prefix}-*"):
            log.info("removing %s, left by an interrupted sample", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(work: Path, out_dir: Path) -> None:
    """Rename the finished sample over the old one; the old files go, none are mixed in."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.rmdir(old)
        os.replace(out_dir, old)
    os.replace(work, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _filter_prep_dir(run_dir: Path, prep_dir: str | Path | None) -> Path:
    """The prepared folder the GAN learned from: the filter compares with its train split."""
    gan = read_json(run_dir / "gan.json") if (run_dir / "gan.json").is_file() else {}
    if prep_dir is None:
        prep_dir = gan.get("prep_dir")
        if not prep_dir or not Path(prep_dir).is_dir():
            raise MasksynthError(
                f"--privacy-filter needs the GAN's prepared folder: {run_dir}/gan.json does not "
                "name one that exists; pass --prep PREP_DIR"
            )
    prep_dir = Path(prep_dir)
    trained_on = gan.get("prep_fingerprint")
    now = read_prepared(prep_dir)["fingerprint"]
    if trained_on and trained_on != now:
        raise MasksynthError(
            f"the GAN in {run_dir} learned from prepared data {trained_on}, but {prep_dir} is "
            f"{now}: the filter must compare with the GAN's own training photos"
        )
    return prep_dir


def _filter_settings(config: AuditConfig) -> dict:
    keys = ("filter_holdout", "near_copy_quantile", "identity_far", "matchers")
    return {k: config.to_dict()[k] for k in keys}


def _release_filter(prep_dir: Path):
    from masksynth.privacy.release_filter import build_filter

    return build_filter(prep_dir, AuditConfig())


def _write_png(path: Path, image: torch.Tensor) -> str:
    """Save one image; its sha256 goes into the manifest."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
