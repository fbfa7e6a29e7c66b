from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imaging import encode, exif_rotated_jpeg, picture, png_claiming_size, write
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
REAL_DATA = Path(os.environ.get("MASKSYNTH_DATA", REPO.parent / "shared/datasets/face-mask"))

# The keys `masksynth evaluate` must write, exactly (issue 4).
BINARY_KEYS = {
    "n",
    "sensitivity",
    "specificity",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "confusion",
}
# evaluate adds the classes' own recall, their confusion matrix and the calibration
EVALUATE_KEYS = BINARY_KEYS | {"per_class", "confusion_matrix", "calibration"}

# a tiny conditional GAN run on the CPU, trained for exactly its --epochs
SMALL_GAN_RUN = dict(
    mode="conditional",
    batch_size=8,
    device="cpu",
    precision="fp32",
    final_metrics=False,
    log_every_steps=2,
    minutes=0.0,
)

# file -> (expected status, reason prefix or flag that must be reported)
BAD_FILES = {
    "with_mask/empty.jpg": ("rejected", "empty file"),
    "with_mask/truncated.jpg": ("rejected", "truncated or corrupt"),
    "with_mask/notes.jpg": ("rejected", "not an image"),
    "with_mask/bomb.png": ("rejected", "decompression bomb"),
    "without_mask/tiny.png": ("rejected", "too small"),
    "without_mask/broken_link.jpg": ("rejected", "unreadable"),
    "with_mask/.DS_Store": ("skipped", "hidden file"),
    "without_mask/pipe.jpg": ("skipped", "not a regular file"),
    "with_mask/copy_of_a.jpg": ("duplicate", "same bytes as with_mask/a.jpg"),
    "with_mask/shared.jpg": ("label_conflict", "same bytes also labelled otherwise"),
    "without_mask/shared.jpg": ("label_conflict", "same bytes also labelled otherwise"),
}
# good files with a quirk -> flag that must be set
QUIRKS = {
    "with_mask/png_named.jpg": "ext_mismatch",
    "with_mask/webp_named.png": "ext_mismatch",
    "with_mask/rgba.png": "alpha_flattened",
    "with_mask/palette.png": "palette",
    "without_mask/grey.png": "grayscale",
    "without_mask/cmyk.jpg": "cmyk",
    "without_mask/deep.png": "high_bit_depth",
    "without_mask/rotated.jpg": "exif_rotated",
    "with_mask/small30.jpg": "tiny",
}


def build_messy_folder(root: Path, n_good: int = 12) -> Path:
    """An ImageFolder holding every kind of bad input, every quirk, and plain good files."""
    for k in range(n_good):
        write(root / f"with_mask/good_{k:02d}.jpg", encode(picture(100 + k), "JPEG", quality=90))
        write(root / f"without_mask/good_{k:02d}.jpg", encode(picture(200 + k), "JPEG", quality=90))
    a = encode(picture(1), "JPEG", quality=90)
    write(root / "with_mask/a.jpg", a)
    write(root / "with_mask/copy_of_a.jpg", a)
    shared = encode(picture(2), "JPEG", quality=90)
    write(root / "with_mask/shared.jpg", shared)
    write(root / "without_mask/shared.jpg", shared)
    # near duplicate of good_00: resized and re-encoded
    near = picture(100).resize((88, 73), Image.Resampling.BICUBIC)
    write(root / "with_mask/good_00_resized.jpg", encode(near, "JPEG", quality=60))

    write(root / "with_mask/empty.jpg", b"")
    write(root / "with_mask/truncated.jpg", a[: len(a) // 2])
    write(root / "with_mask/notes.jpg", b"these are notes, not a photo\n" * 10)
    write(root / "with_mask/bomb.png", png_claiming_size(20000, 20000))
    write(root / "without_mask/tiny.png", encode(picture(3, (12, 10)), "PNG"))
    os.symlink(root / "nowhere.jpg", root / "without_mask/broken_link.jpg")
    write(root / "with_mask/.DS_Store", b"\0\0\0\1Bud1")
    os.mkfifo(root / "without_mask/pipe.jpg")

    write(root / "with_mask/png_named.jpg", encode(picture(4), "PNG"))
    write(root / "with_mask/webp_named.png", encode(picture(5), "WEBP", quality=90))
    rgba = picture(6).convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 255, np.uint8)
    alpha[:, :20] = 0  # a transparent left band
    rgba.putalpha(Image.fromarray(alpha))
    write(root / "with_mask/rgba.png", encode(rgba, "PNG"))
    palette = picture(7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    write(root / "with_mask/palette.png", encode(palette, "PNG", transparency=0))
    write(root / "without_mask/grey.png", encode(picture(8).convert("L"), "PNG"))
    write(root / "without_mask/cmyk.jpg", encode(picture(9).convert("CMYK"), "JPEG"))
    deep = (np.asarray(picture(10).convert("L"), np.uint16) * 257).astype(np.uint16)
    write(root / "without_mask/deep.png", encode(Image.fromarray(deep), "PNG"))
    write(root / "without_mask/rotated.jpg", exif_rotated_jpeg(picture(11, (100, 60))))
    write(root / "with_mask/small30.jpg", encode(picture(12, (30, 40)), "JPEG"))
    (root / "README.txt").write_text("top-level files are not classes\n")
    return root


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    return build_messy_folder(tmp_path / "raw")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "with_mask").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set MASKSYNTH_DATA)")
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_prep(tmp_path_factory) -> Path:
    """A prepared folder of 2 x 40 generated 64 px images (no faces needed for GAN plumbing)."""
    from masksynth.config import PrepareConfig
    from masksynth.data.prepare import prepare

    root = tmp_path_factory.mktemp("tiny")
    for k in range(40):
        write(root / f"raw/with_mask/{k:02d}.png", encode(picture(1000 + k, (64, 64)), "PNG"))
        write(root / f"raw/without_mask/{k:02d}.png", encode(picture(2000 + k, (64, 64)), "PNG"))
    prepare(
        root / "raw",
        root / "prep",
        PrepareConfig(sizes=(64,), face_crop=False, split=(0.6, 0.2, 0.2), workers=1),
    )
    return root / "prep"


@pytest.fixture(scope="session")
def colour_prep(tmp_path_factory) -> Path:
    """Two classes told apart by colour alone: reddish and bluish noise-textured squares,
    48 of each (a generator that learns the classes must give each its own colour)."""
    from masksynth.config import PrepareConfig
    from masksynth.data.prepare import prepare

    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for k in range(48):
        for label, channel in (("with_mask", 0), ("without_mask", 2)):
            pixels = rng.integers(0, 90, (64, 64, 3), dtype=np.uint8)
            pixels[:, :, channel] += 150
            write(root / f"raw/{label}/{k:02d}.png", encode(Image.fromarray(pixels), "PNG"))
    prepare(
        root / "raw",
        root / "prep",
        PrepareConfig(sizes=(64,), face_crop=False, split=(0.6, 0.2, 0.2), workers=1),
    )
    return root / "prep"


def real_prep(real_data: Path, root: Path, per_class: int, seed: int, split) -> Path:
    """`per_class` dev photos per class drawn with `seed`, copied to root/raw and prepared
    (faces cropped, 64 px) into root/prep with the given split fractions."""
    import random
    import shutil

    from masksynth.config import PrepareConfig
    from masksynth.data.prepare import prepare

    rng = random.Random(seed)
    for label in ("with_mask", "without_mask"):
        files = sorted(p for p in (real_data / label).iterdir() if p.suffix == ".jpg")
        (root / "raw" / label).mkdir(parents=True, exist_ok=True)
        for path in rng.sample(files, per_class):
            shutil.copy2(path, root / "raw" / label / path.name)
    prepare(root / "raw", root / "prep", PrepareConfig(sizes=(64,), split=split))
    return root / "prep"


@pytest.fixture(scope="session")
def model(real_data, tmp_path_factory):
    """A ResNet18 trained 3 epochs on 2 x 30 face-cropped dev photos, and its folder (raw
    photos in root/raw, prepared ones in root/prep): the model deployment tests run."""
    from masksynth.classify.train import train_classifier
    from masksynth.config import classifier_config

    root = tmp_path_factory.mktemp("model")
    real_prep(real_data, root, 30, 3, (0.6, 0.2, 0.2))
    config = classifier_config("paper", epochs=3, batch_size=16, device="cpu", precision="fp32")
    train_classifier(root / "prep", root / "clf", config)
    return root / "clf" / "classifier.pt", root


def photo_with_one_face(root: Path, label: str, index: int = 0) -> Path:
    """A photo of `root`/raw of the class with one face (prepare's own detection), at least
    200 px wide: the index-th most confident such face."""
    from masksynth.fileio import read_csv

    rows = [
        r
        for r in read_csv(root / "prep" / "manifest.csv")
        if r["label"] == label and r["n_faces"] == "1" and int(r["width"] or 0) >= 200
    ]
    rows.sort(key=lambda r: -float(r.get("face_score") or 0))
    return root / "raw" / rows[index]["source"]


def side_by_side(*photos, size=(640, 480)):
    """A frame holding each photo side by side, scaled to fit its slot."""
    canvas = Image.new("RGB", size, (128, 128, 128))
    slot = size[0] // len(photos)
    for i, path in enumerate(photos):
        image = Image.open(path).convert("RGB")
        image.thumbnail((slot - 20, size[1] - 20))
        canvas.paste(image, (i * slot + 10, (size[1] - image.height) // 2))
    return np.asarray(canvas)


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`masksynth ARGS...` in a child process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "masksynth.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def interrupted(target: str, calls: int, signame: str, cli_args: list[str]):
    """The CLI run in a child that signals itself right after `calls` calls of `target`
    ('package.module:function'): an interruption at the same point on any machine."""
    return subprocess.run(
        [sys.executable, str(TESTS / "interrupt.py"), target, str(calls), signame, *cli_args],
        capture_output=True,
        text=True,
        timeout=600,
    )
