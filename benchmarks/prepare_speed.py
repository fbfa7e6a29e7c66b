"""`masksynth prepare` speed, cold, against a plain resize loop over the same files.

prepare validates, fingerprints (sha256, pHash), face-detects (YuNet), crops, deduplicates,
splits and caches each photo, in one process per core. The baseline is what people write
first: for each file PIL open, convert to RGB, resize to 64x64, save a PNG, in one process,
with none of that work. Each run writes into a fresh temporary folder (nothing reused).
Prints a JSON line per --sets entry: `prepare_1k` (the first --per-class files of each class,
linked into a temporary ImageFolder), `prepare_all` (every file) and `prepare_copy`: every
file again after the data folder was copied (new file times, the same bytes) into a folder
prepared from the original, against preparing it cold.

    python benchmarks/prepare_speed.py --data ../shared/datasets/face-mask
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import result
from PIL import Image

from masksynth.config import PrepareConfig
from masksynth.data.prepare import prepare

NOTE = "baseline: PIL open, RGB, resize 64x64, save PNG; no face detection, validation, dedupe"


def class_files(data_dir: Path) -> dict[str, list[Path]]:
    """The files of each class folder, sorted (what ImageFolder and prepare look at)."""
    return {
        d.name: sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        for d in sorted(data_dir.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


def link_subset(data_dir: Path, per_class: int, out: Path) -> int:
    """An ImageFolder of symlinks to the first per_class files of each class; its size."""
    count = 0
    for name, files in class_files(data_dir).items():
        (out / name).mkdir(parents=True)
        for path in files[:per_class]:
            (out / name / path.name).symlink_to(path.resolve())
            count += 1
    return count


def time_prepare(data_dir: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as out:
        started = time.perf_counter()
        prepare(data_dir, out, PrepareConfig(sizes=(64,)))
        return time.perf_counter() - started


def time_plain(data_dir: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-resize-") as out:
        started = time.perf_counter()
        for name, files in class_files(data_dir).items():
            (Path(out) / name).mkdir()
            for path in files:
                with Image.open(path) as image:
                    small = image.convert("RGB").resize((64, 64))
                small.save(Path(out) / name / f"{path.stem}.png")
        return time.perf_counter() - started


def time_copy(data_dir: Path) -> tuple[float, float]:
    """Seconds to prepare a fresh copy of the data cold, then again into a folder prepared
    from the original (every file has a new time, none new bytes)."""
    with tempfile.TemporaryDirectory(prefix="bench-copy-") as work:
        copy, out = Path(work) / "data", Path(work) / "prep"
        shutil.copytree(data_dir, copy, copy_function=shutil.copy)  # new modification times
        prepare(data_dir, out, PrepareConfig(sizes=(64,)))
        started = time.perf_counter()
        prepare(copy, out, PrepareConfig(sizes=(64,)))
        again = time.perf_counter() - started
        return again, time_prepare(copy)


def measure(name: str, data_dir: Path, n_files: int, repeats: int) -> dict:
    ours, plain = [], []
    for _ in range(repeats):
        plain.append(n_files / time_plain(data_dir))
        ours.append(n_files / time_prepare(data_dir))
    return result(name, "img/s", ours, plain, files=n_files, note=NOTE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--per-class", type=int, default=500, help="files per class of the subset")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--sets", nargs="+", choices=("1k", "all", "copy"), default=["1k", "all", "copy"]
    )
    args = parser.parse_args()
    if "1k" in args.sets:
        with tempfile.TemporaryDirectory(prefix="bench-subset-") as subset:
            n = link_subset(args.data, args.per_class, Path(subset))
            print(json.dumps(measure("prepare_1k", Path(subset), n, args.repeats)), flush=True)
    if "all" in args.sets:
        n = sum(len(files) for files in class_files(args.data).values())
        print(json.dumps(measure("prepare_all", args.data, n, args.repeats)), flush=True)
    if "copy" in args.sets:
        n = sum(len(files) for files in class_files(args.data).values())
        runs = [time_copy(args.data) for _ in range(args.repeats)]
        ours, cold = [n / again for again, _ in runs], [n / first for _, first in runs]
        note = "baseline: the same copy prepared cold (nothing to reuse)"
        print(json.dumps(result("prepare_copy", "img/s", ours, cold, files=n, note=note)))


if __name__ == "__main__":
    main()
