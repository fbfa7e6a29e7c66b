"""The `sample` stage: a synthetic ImageFolder from a trained GAN, every image regenerable.

Image i of class c is G(z_i) where z_i is row i of the latent block drawn from
(seed, class index); the manifest records the checkpoint's sha256, seed and row, so any
image can be regenerated bit for bit on the same machine. The EMA generator is used when
the run has one. Generation is in fp32 and eval mode, so an image does not depend on the
other images of its batch.

A `Screen` (e.g. privacy.release's filter) may turn candidates away: further latents are
drawn until n_per_class pass. The GAN side knows nothing of why; it records what the screen
says and what it dropped.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from masksynth.data.synthetic import MANIFEST, SAMPLE_RECORD, listed_files
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_csv, write_json
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.generate import generate, latents
from masksynth.gan.load import load_generators, load_selection
from masksynth.progress import progress
from masksynth.provenance import changes, digest
from masksynth.runinfo import run_record

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


class Checks(Protocol):
    def check(self, images: torch.Tensor, class_index: int) -> list[dict]:
        """Per image: a dict with 'reason' ('' or missing = keep) and any details."""

    def settings(self) -> dict:
        """What it decided with (thresholds...), for sample.json."""


@dataclass(frozen=True)
class Screen:
    """A choice among candidate images made outside the GAN."""

    name: str  # its record's key in sample.json, e.g. 'privacy_filter'
    inputs: dict  # what decides its choices: part of the sample's inputs, checked before reuse
    build: Callable[[], Checks]  # called only when a sample is drawn
    fields: tuple[str, ...] = ()  # the detail columns of dropped.csv


def sample(
    run_dir: str | Path,
    out_dir: str | Path,
    n_per_class: int,
    seed: int = 0,
    device: str = "auto",
    screen: Screen | None = None,
    max_candidates: int = 10,
    class_keep: float | None = None,
) -> dict:
    """Write n_per_class PNGs per class and manifest.csv; reuse an identical earlier sample.

    The sample is written into a temporary folder beside `out_dir` and renamed into place,
    so `out_dir` only ever holds one complete sample. With a `screen`, candidates it turns
    away are dropped and further latents drawn until n_per_class pass, at most
    max_candidates x n_per_class. `class_keep` (default: the run's config's) keeps that share
    of the candidates, those D's class head is surest of (gan.select), before the screen.
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
        "screen": None if screen is None else {screen.name: screen.inputs, "max": max_candidates},
        "class_keep": class_keep,  # None: the run's own, which the checkpoint fixes
    }
    previous = _read_record(out_dir)
    if previous:
        why = changes(previous.get("inputs"), inputs)
        if not why and _complete(out_dir):
            log.info("%s already holds this sample: reusing it", out_dir)
            return {**previous, "reused": True}
        log.info("%s: sampling anew (%s)", out_dir, "; ".join(why) or "files missing")

    started = time.perf_counter()
    torch_device = pick_device(device)
    state, generators = load_generators(run_dir, torch_device)
    selection = load_selection(run_dir, state, generators, torch_device, class_keep)
    checks = screen.build() if screen is not None else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)
    work = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        rows, dropped = _draw(
            work, state, generators, inputs, checks, max_candidates, torch_device, selection
        )
        selected = None
        if selection is not None:
            # the candidates each class used: latents up to its last image kept
            drawn = {
                c: 1 + max(r["latent_index"] for r in rows if r["label"] == c)
                for c in state["classes"]
            }
            selected = {**selection.record(state["classes"]), "candidates": drawn}
            for name, count in drawn.items():
                log.info(
                    "class selection: %d %s images from the first %d candidates",
                    n_per_class,
                    name,
                    count,
                )
        seconds = round(time.perf_counter() - started, 1)
        meta = _write_records(
            work, run_dir, state, inputs, rows, dropped, screen, checks, selected, seconds
        )
        os.sync()  # every file is on disk before the folder appears under its name
        _swap_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return meta


def _draw(work, state, generators, inputs, checks, max_candidates, device, selection=None):
    """Generate (select and screen) the images into `work`; the manifest and dropped rows."""
    classes, z_dim, seed = state["classes"], state["config"]["z_dim"], inputs["seed"]
    n_per_class = inputs["n_per_class"]
    share = 1.0 if selection is None else selection.keep
    rows, dropped = [], []
    for k, name in enumerate(classes):
        G, conditional, which = generators[k]
        (work / name).mkdir()
        kept, tried = 0, 0
        bar = progress(n_per_class, f"sample {name}", "img")
        while kept < n_per_class:
            if tried >= max_candidates * n_per_class / share:
                passed = "the class selection and " if selection is not None else ""
                raise MasksynthError(
                    f"only {kept} of {n_per_class} {name} images passed {passed}the screen "
                    f"({next(iter(inputs['screen']))}) after {tried} candidates: the GAN "
                    "reproduces its training photos; audit it (masksynth audit) or train it "
                    "differently"
                )
            # latent i is row i of the class's latent block, however many are drawn
            count = (n_per_class - kept) if checks is None else n_per_class
            count = math.ceil(count / share)
            z = latents(seed, k, tried + count, z_dim)[tried:]
            labels = torch.full((count,), k) if conditional else None
            images = generate(G, z, labels, device)
            rows_drawn = torch.arange(tried, tried + count)
            if selection is not None:
                chosen = selection.kept(images, k)
                images, rows_drawn = images[chosen], rows_drawn[chosen]
            verdicts = checks.check(images, k) if checks is not None else [{}] * len(images)
            for image, row, check in zip(images, rows_drawn.tolist(), verdicts, strict=True):
                record = {
                    "label": name,
                    "class_index": k,
                    "seed": seed,
                    "latent_index": row,
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


def _write_records(
    work, run_dir, state, inputs, rows, dropped, screen, checks, selected, seconds
) -> dict:
    classes = state["classes"]
    write_csv(work / MANIFEST, MANIFEST_FIELDS, rows)
    screened = {}
    if screen is not None:
        write_csv(work / "dropped.csv", (*MANIFEST_FIELDS[2:], "reason", *screen.fields), dropped)
        info = {
            "on": True,
            **checks.settings(),
            "dropped": {c: sum(d["label"] == c for d in dropped) for c in classes},
            "candidates": {c: sum(r["label"] == c for r in rows + dropped) for c in classes},
        }
        for c in classes:
            log.info(
                "%s: %s kept %d of %d candidates",
                screen.name,
                c,
                inputs["n_per_class"],
                info["candidates"][c],
            )
        screened = {screen.name: info}
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
        "class_selection": selected,
        **screened,
        # compute time (loading, generating, screening): an experiment reusing it adds it up
        "seconds": seconds,
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


def _write_png(path: Path, image: torch.Tensor) -> str:
    """Save one image; its sha256 goes into the manifest."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
