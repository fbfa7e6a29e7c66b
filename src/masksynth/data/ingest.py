"""Find the files of an ImageFolder tree and turn each into a record plus resized face crops."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image

from masksynth.config import TEST, TRAIN, VAL
from masksynth.data.decode import RejectedImage, decode_image
from masksynth.data.faces import FaceDetector, centre_square, crop_resized, square_around
from masksynth.errors import MasksynthError

_SPLIT_ALIASES = {
    "train": TRAIN,
    "val": VAL,
    "valid": VAL,
    "validation": VAL,
    "test": TEST,
}


@dataclass(frozen=True)
class SourceFile:
    relpath: str  # relative to DATA_DIR, with forward slashes
    label: str
    preset_split: str  # "" unless DATA_DIR already holds train/val/test folders
    skip_reason: str  # non-empty: listed in the manifest, never decoded
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class IngestOptions:
    sizes: tuple[int, ...]
    face_crop: bool
    face_margin: float
    face_threshold: float
    min_side: int
    max_pixels: int
    alpha_background: tuple[int, int, int]


def scan_image_folder(
    data_dir: Path, min_classes: int = 2
) -> tuple[list[SourceFile], list[str], bool]:
    """List every file under the class folders; returns (files, class names, has preset split)."""
    if not data_dir.is_dir():
        raise MasksynthError(f"{data_dir} is not a folder")
    top = _visible_subdirs(data_dir)
    split_dirs = {
        _SPLIT_ALIASES[d.name.lower()]: d for d in top if d.name.lower() in _SPLIT_ALIASES
    }
    preset = TRAIN in split_dirs and len(split_dirs) >= 2
    roots = [(split, d) for split, d in split_dirs.items()] if preset else [("", data_dir)]
    files: list[SourceFile] = []
    classes: set[str] = set()
    for split, root in roots:
        for class_dir in _visible_subdirs(root):
            classes.add(class_dir.name)
            files.extend(_walk_class(data_dir, class_dir, class_dir.name, split))
    if len(classes) < min_classes:
        raise MasksynthError(
            f"{data_dir} is not an ImageFolder with at least {min_classes} class(es): expected one "
            "subfolder per class (e.g. with_mask/ and without_mask/), "
            f"found {sorted(classes) or 'none'}"
        )
    return sorted(files, key=lambda f: f.relpath), sorted(classes), preset


def _visible_subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _walk_class(data_dir: Path, class_dir: Path, label: str, split: str) -> list[SourceFile]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        hidden_dirs = [d for d in dirnames if d.startswith(".")]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames) + hidden_dirs:
            path = Path(dirpath) / name
            rel = path.relative_to(data_dir).as_posix()
            reason, size, mtime = _skip_reason(path)
            found.append(SourceFile(rel, label, split, reason, size, mtime))
    return found


def _skip_reason(path: Path) -> tuple[str, int, int]:
    if path.name.startswith("."):
        return "hidden file", 0, 0
    try:
        info = path.stat()
    except OSError:
        return "", 0, 0  # e.g. a broken link: reading it fails and rejects it with the reason
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", 0, 0
    return "", info.st_size, info.st_mtime_ns


_detector: FaceDetector | None = None


def init_worker(face_threshold: float) -> None:
    """Per-process setup: one detector per process, and no thread oversubscription."""
    global _detector
    cv2.setNumThreads(1)
    _detector = FaceDetector(score_threshold=face_threshold)


def process_file(
    data_dir: Path, source: SourceFile, options: IngestOptions
) -> tuple[dict, dict[int, np.ndarray] | None]:
    """Decode, fingerprint, face-crop and resize one file. Never raises for a bad file."""
    record: dict = {
        "source": source.relpath,
        "label": source.label,
        "bytes": source.size,
        "status": "ok",
        "reason": "",
        "flags": [],
    }
    try:
        data = (data_dir / source.relpath).read_bytes()
    except OSError as error:
        reason = f"unreadable: {error.strerror or error}"
        return {**record, "status": "rejected", "reason": reason}, None
    record["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_image(
            data,
            source.relpath,
            min_side=options.min_side,
            max_pixels=options.max_pixels,
            alpha_background=options.alpha_background,
        )
    except RejectedImage as error:
        return {**record, "status": "rejected", "reason": str(error)}, None
    rgb = decoded.rgb
    height, width = rgb.shape[:2]
    pil = Image.fromarray(rgb)
    record.update(
        format=decoded.format,
        mode=decoded.mode,
        width=width,
        height=height,
        flags=list(decoded.flags),
        phash=str(imagehash.phash(pil)),
    )

    face = None
    if options.face_crop:
        if _detector is None:
            init_worker(options.face_threshold)
        faces = _detector.detect(rgb)
        face = faces[0] if faces else None
    if face is not None:
        crop = square_around(face.box, width, height, options.face_margin)
        record.update(
            face_box=[round(v, 1) for v in face.box],
            face_score=round(face.score, 4),
            n_faces=len(faces),
        )
    else:
        crop = centre_square(width, height)
        if options.face_crop:
            record["flags"].append("no_face")
    x0, y0, side = crop
    record["crop_box"] = [x0, y0, side]
    if side < min(options.sizes):
        record["flags"].append("low_res")
    arrays = {size: crop_resized(pil, crop, size) for size in options.sizes}
    return record, arrays


def process_files(data_dir: Path, todo: list[SourceFile], options: IngestOptions, workers: int):
    """(record, arrays) per file, decoded and face-cropped in `workers` processes, any order."""
    if workers <= 1 or len(todo) < 8:
        init_worker(options.face_threshold)
        for source in todo:
            yield process_file(data_dir, source, options)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(
        workers, initializer=_init_pool_worker, initargs=(options.face_threshold,)
    ) as pool:
        tasks = [(data_dir, source, options) for source in todo]
        yield from pool.imap_unordered(_process_star, tasks, chunksize=4)
        pool.close()  # all done: let the workers exit rather than be terminated
        pool.join()


def _init_pool_worker(face_threshold: float) -> None:
    # Ctrl-C is handled once, by the parent, which saves finished work and exits cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(face_threshold)


def _process_star(args: tuple) -> tuple[dict, dict | None]:
    return process_file(*args)
