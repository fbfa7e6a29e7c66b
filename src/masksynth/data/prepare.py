"""The `prepare` stage: raw ImageFolder -> validated, deduplicated, face-cropped, split cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from masksynth.config import SPLITS, TRAIN, VAL, PrepareConfig
from masksynth.data import cache
from masksynth.data.dedupe import UnionFind, exact_duplicate_groups, near_duplicate_pairs
from masksynth.data.ingest import (
    IngestOptions,
    SourceFile,
    process_files,
    scan_image_folder,
)
from masksynth.data.report import write_prepare_report
from masksynth.data.split import (
    AUTO,
    NONE,
    assign_splits,
    compile_group_regex,
    group_key,
    resolve_grouping,
)
from masksynth.data.store import ItemStore
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_csv, write_json
from masksynth.interrupts import DeferredInterrupt
from masksynth.progress import progress
from masksynth.provenance import digest
from masksynth.runinfo import run_record

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when processing changes so old stores are not reused
MANIFEST_FIELDS = (
    "source",
    "label",
    "split",
    "status",
    "reason",
    "flags",
    "sha256",
    "bytes",
    "format",
    "mode",
    "width",
    "height",
    "phash",
    "face_score",
    "n_faces",
    "face_box",
    "crop_box",
    "exact_dup_of",
    "near_dup_group",
    "group_key",
    "group",
)


def prepare(data_dir: str | Path, out_dir: str | Path, config: PrepareConfig) -> dict:
    """Run the stage; returns the content of prepare.json. Reuses earlier work when it can."""
    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    _validate(config)
    if config.group_by not in (None, AUTO, NONE):
        compile_group_regex(config.group_by)  # a bad regex fails before any work
    _refuse_output_inside(data_dir, out_dir)
    files, classes, preset = scan_image_folder(data_dir)
    grouping = resolve_grouping(config.group_by, [Path(f.relpath).name for f in files])
    pattern = compile_group_regex(grouping["pattern"])
    if config.positive_class not in classes:
        raise MasksynthError(
            f"positive class {config.positive_class!r} is not one of the class "
            f"folders {classes}: pass --positive-class"
        )

    listing = _listing_fingerprint(config, files, data_dir)
    previous = _read_previous(out_dir)
    if previous.get("listing_fingerprint") == listing and _cache_complete(out_dir, previous):
        log.info("%s is up to date with %s: reusing it", out_dir, data_dir)
        return {**previous, "reused": True}

    out_dir.mkdir(parents=True, exist_ok=True)
    options = IngestOptions(
        tuple(config.sizes),
        config.face_crop,
        config.face_margin,
        config.face_threshold,
        config.min_side,
        config.max_pixels,
        tuple(config.alpha_background),
    )
    results = _process_all(data_dir, out_dir, files, options, config.workers)

    rows = [_row(source, results.get(source.relpath)) for source in files]
    images = {
        source.relpath: results[source.relpath][1]
        for source in files
        if source.relpath in results and results[source.relpath][1] is not None
    }
    duplicates = _mark_exact_duplicates(rows)
    groups, near_groups, cross_class_near = _group(rows, config, pattern)
    _assign_splits(rows, groups, config, preset)
    fingerprint = _content_fingerprint(config, rows)

    counts = _write_outputs(out_dir, rows, images, classes, config)
    meta = {
        "stage": "prepare",
        "data_dir": str(data_dir),
        "config": config.to_dict(),
        # what later stages record: the images (by content), labels, split and settings
        "fingerprint": fingerprint,
        "listing_fingerprint": listing,  # the up-to-date check of this stage alone
        "classes": classes,
        "positive_class": config.positive_class,
        "splits": list(SPLITS),
        "preset_split": preset,
        "group_by": grouping,
        "counts": counts,
        "seconds": round(time.perf_counter() - started, 1),
        **run_record(),
    }
    write_prepare_report(out_dir, rows, images, meta, duplicates, near_groups, cross_class_near)
    write_json(out_dir / "prepare.json", meta)
    empty = [c for c in classes if counts["usable"].get(c, 0) == 0]
    if empty:
        raise MasksynthError(f"class {empty[0]!r} has no usable image: see {out_dir / 'report.md'}")
    return meta


def _validate(config: PrepareConfig) -> None:
    if not config.sizes or min(config.sizes) < 8 or max(config.sizes) > 1024:
        raise MasksynthError("--size must be between 8 and 1024 px")
    if config.min_side < 1:
        raise MasksynthError("--min-side must be at least 1 px")
    if not 0 <= config.face_margin <= 2:
        raise MasksynthError("--face-margin must be between 0 and 2")
    if not 0 < config.face_threshold < 1:
        raise MasksynthError("--face-threshold must be between 0 and 1")
    if not 0 <= config.near_dup_bits <= 32:
        raise MasksynthError("--near-dup-bits must be between 0 and 32")


def _refuse_output_inside(data_dir: Path, out_dir: Path) -> None:
    """An output folder inside the data would be read back as a class on the next run."""
    out = out_dir.resolve()
    if out == data_dir or data_dir in out.parents:
        raise MasksynthError(
            f"--out {out_dir} is inside the data folder {data_dir}: its files would be read "
            "as photos next time; choose a folder outside it"
        )


def _listing_fingerprint(config: PrepareConfig, files: list[SourceFile], data_dir: Path) -> str:
    """Folder, file sizes and times, settings: unchanged means nothing to redo (a quick check)."""
    settings = {k: v for k, v in config.to_dict().items() if k != "workers"}  # not the result
    listing = [(f.relpath, f.size, f.mtime_ns, f.skip_reason) for f in files]
    blob = json.dumps([FORMAT_VERSION, str(data_dir), settings, listing], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _content_fingerprint(config: PrepareConfig, rows: list[dict]) -> str:
    """The prepared data's identity: every file's content, label, status and split, and the
    settings that shape the crops. A copied or moved folder keeps it; so does another set of
    cached sizes (each size is its own file), so later stages are not redone for either."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("workers", "sizes")}
    keys = ("source", "sha256", "label", "status", "split")
    return digest([FORMAT_VERSION, settings, [[row.get(k) for k in keys] for row in rows]])


def _store_key(options: IngestOptions) -> str:
    blob = json.dumps([FORMAT_VERSION, options.__dict__], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_previous(out_dir: Path) -> dict:
    try:
        return read_json(out_dir / "prepare.json")
    except (OSError, ValueError):
        return {}


def _cache_complete(out_dir: Path, meta: dict) -> bool:
    return all(
        cache.images_path(out_dir, split, size).is_file()
        for split in meta.get("splits", ())
        for size in meta["config"]["sizes"]
    )


def _process_all(
    data_dir: Path, out_dir: Path, files: list[SourceFile], options: IngestOptions, workers: int
) -> dict[str, tuple[dict, dict | None]]:
    """Process every readable file, reusing the store; resumable after an interruption."""
    store = ItemStore(out_dir / "work", _store_key(options), tuple(options.sizes))
    stored = store.load()
    by_path = {
        record["source"]: (size, record, arrays)
        for (_, size, _), (record, arrays) in stored.items()
    }
    results, todo = {}, []
    for source in files:
        if source.skip_reason:
            continue
        hit = stored.get((source.relpath, source.size, source.mtime_ns))
        if hit is None:  # a new time (a copy, a touch) with the same bytes is no new work
            hit = _same_content(data_dir, source, by_path.get(source.relpath))
        if hit is not None:
            results[source.relpath] = hit
        else:
            todo.append(source)
    if results:
        log.info("reusing %d processed files from %s", len(results), store.folder)
    stat = {s.relpath: s for s in files}
    if todo:
        workers = workers or len(os.sched_getaffinity(0))
        bar = progress(len(todo), "prepare", "img")
        # Ctrl-C sets a flag checked after each stored file: a KeyboardInterrupt raised
        # wherever the signal happens to land (a finalizer, a worker's result) can be lost
        try:
            with DeferredInterrupt() as stop:
                for record, arrays in process_files(data_dir, todo, options, workers):
                    source = stat[record["source"]]
                    results[source.relpath] = (record, arrays)
                    store.add(record, arrays, source.size, source.mtime_ns)
                    bar.update()
                    if stop.requested:
                        raise KeyboardInterrupt
        finally:
            bar.close()
            store.flush()  # on Ctrl-C too: everything finished so far is kept
    current = {(s.relpath, s.size, s.mtime_ns) for s in files}
    if any(key not in current for key in stored):  # deleted or changed files: compact
        store.rewrite(
            [
                (results[s.relpath][0], results[s.relpath][1], s.size, s.mtime_ns)
                for s in files
                if s.relpath in results
            ]
        )
    return results


def _same_content(data_dir: Path, source: SourceFile, stored: tuple | None) -> tuple | None:
    """The stored result of this path if the file's bytes are the ones it was made from."""
    if stored is None or stored[0] != source.size or not stored[1].get("sha256"):
        return None
    try:
        same = file_sha256(data_dir / source.relpath) == stored[1]["sha256"]
    except OSError:
        return None  # processing it reports why it cannot be read
    return (stored[1], stored[2]) if same else None


def _row(source: SourceFile, result: tuple[dict, dict | None] | None) -> dict:
    if result is None:
        return {
            "source": source.relpath,
            "label": source.label,
            "status": "skipped",
            "reason": source.skip_reason,
            "flags": [],
            "preset_split": source.preset_split,
        }
    record = dict(result[0])
    record["flags"] = list(record.get("flags", []))
    record["preset_split"] = source.preset_split
    return record


def _mark_exact_duplicates(rows: list[dict]) -> list[list[int]]:
    """Same bytes twice: keep the first copy; same bytes under two classes: drop all copies."""
    usable = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    groups = [
        [usable[k] for k in g] for g in exact_duplicate_groups([rows[i]["sha256"] for i in usable])
    ]
    for group in groups:
        labels = sorted({rows[i]["label"] for i in group})
        if len(labels) > 1:
            for i in group:
                others = [rows[j]["source"] for j in group if rows[j]["label"] != rows[i]["label"]]
                rows[i].update(
                    status="label_conflict",
                    reason=f"same bytes also labelled otherwise: {', '.join(others)}",
                )
            continue
        keep = group[0]
        for i in group[1:]:
            same_split = rows[i]["preset_split"] == rows[keep]["preset_split"]
            rows[i]["exact_dup_of"] = rows[keep]["source"]
            if same_split:
                rows[i].update(status="duplicate", reason=f"same bytes as {rows[keep]['source']}")
            else:
                rows[i]["flags"].append("leak_across_preset_splits")
    return groups


def _group(rows: list[dict], config: PrepareConfig, pattern) -> tuple[list, list, list]:
    """Union near duplicates and --group-by matches into groups that must share a split."""
    usable = [i for i, row in enumerate(rows) if row["status"] == "ok"]
    finder = UnionFind(len(usable))
    near = UnionFind(len(usable))
    cross_class = []
    pairs = near_duplicate_pairs([rows[i]["phash"] for i in usable], config.near_dup_bits)
    for a, b, distance in pairs:
        finder.union(a, b)
        near.union(a, b)
        if rows[usable[a]]["label"] != rows[usable[b]]["label"]:
            cross_class.append((rows[usable[a]]["source"], rows[usable[b]]["source"], distance))
    first_with_key: dict[str, int] = {}
    for k, i in enumerate(usable):
        key = group_key(pattern, Path(rows[i]["source"]).name)
        if key is not None:
            rows[i]["group_key"] = key
            finder.union(k, first_with_key.setdefault(key, k))
    near_groups = []
    for members in near.groups():
        if len(members) > 1:
            gid = len(near_groups) + 1
            near_groups.append([usable[k] for k in members])
            for k in members:
                rows[usable[k]]["near_dup_group"] = gid
    groups = []
    for gid, members in enumerate(finder.groups(), start=1):
        groups.append([usable[k] for k in members])
        for k in members:
            rows[usable[k]]["group"] = gid
    for source_a, source_b, _ in cross_class:
        for row in rows:
            if row["source"] in (source_a, source_b) and "near_dup_other_class" not in row["flags"]:
                row["flags"].append("near_dup_other_class")
    return groups, near_groups, cross_class


def _assign_splits(
    rows: list[dict], groups: list[list[int]], config: PrepareConfig, preset: bool
) -> None:
    labels = [row["label"] for row in rows]
    if not preset:
        local = {i: k for k, i in enumerate(i for g in groups for i in g)}
        order = [i for g in groups for i in g]
        splits = assign_splits(
            [labels[i] for i in order],
            [[local[i] for i in g] for g in groups],
            config.split,
            config.seed,
        )
        for i, split in zip(order, splits, strict=True):
            rows[i]["split"] = split
        return
    for row in rows:
        if row["status"] == "ok":
            row["split"] = row["preset_split"]
    has_val = any(row.get("split") == VAL for row in rows)
    if not has_val and config.split[1] > 0:
        # The folder brought train/test only: carve val out of train, groups kept whole.
        train_groups = [[i for i in g if rows[i]["split"] == TRAIN] for g in groups]
        train_groups = [g for g in train_groups if g]
        order = [i for g in train_groups for i in g]
        local = {i: k for k, i in enumerate(order)}
        share = config.split[1] / (config.split[0] + config.split[1])
        splits = assign_splits(
            [labels[i] for i in order],
            [[local[i] for i in g] for g in train_groups],
            (1 - share, share, 0.0),
            config.seed,
        )
        for i, split in zip(order, splits, strict=True):
            rows[i]["split"] = split


def _write_outputs(
    out_dir: Path,
    rows: list[dict],
    images: dict[str, dict],
    classes: list[str],
    config: PrepareConfig,
) -> dict:
    class_index = {name: k for k, name in enumerate(classes)}
    per_split: dict[str, dict] = {}
    for split in SPLITS:
        members = [row for row in rows if row["status"] == "ok" and row.get("split") == split]
        arrays = {}
        for size in config.sizes:
            stack = [images[row["source"]][size] for row in members]
            arrays[size] = np.stack(stack) if stack else np.zeros((0, 3, size, size), np.uint8)
        cache.write_split(
            out_dir,
            split,
            arrays,
            [class_index[row["label"]] for row in members],
            [row["source"] for row in members],
        )
        per_split[split] = dict(Counter(row["label"] for row in members))
    manifest = []
    for row in rows:
        out = {key: row.get(key, "") for key in MANIFEST_FIELDS}
        out["flags"] = ";".join(row.get("flags", []))
        for key in ("face_box", "crop_box"):
            if out[key] != "":
                out[key] = " ".join(str(v) for v in out[key])
        manifest.append(out)
    write_csv(out_dir / "manifest.csv", MANIFEST_FIELDS, manifest)
    by_status = Counter((row["label"], row["status"]) for row in rows)
    return {
        "files": dict(Counter(row["label"] for row in rows)),
        "status": {f"{label}/{status}": n for (label, status), n in sorted(by_status.items())},
        "usable": dict(Counter(row["label"] for row in rows if row["status"] == "ok")),
        "splits": per_split,
        "face_detected": dict(
            Counter(row["label"] for row in rows if row["status"] == "ok" and row.get("face_score"))
        ),
    }
