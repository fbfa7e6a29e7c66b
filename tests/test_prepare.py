import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import BAD_FILES, QUIRKS, interrupted
from imaging import encode, picture, write

import masksynth.data.ingest as ingest_module
from masksynth.config import PrepareConfig
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.errors import MasksynthError

CONFIG = PrepareConfig(sizes=(32, 64), split=(0.6, 0.2, 0.2), workers=1)


def _manifest(prep: Path) -> dict[str, dict]:
    with open(prep / "manifest.csv", newline="") as handle:
        return {row["source"]: row for row in csv.DictReader(handle)}


@pytest.fixture
def prepared(messy_folder, tmp_path):
    out = tmp_path / "prep"
    meta = prepare(messy_folder, out, CONFIG)
    return messy_folder, out, meta


def test_every_bad_input_is_reported_with_its_reason(prepared):
    _, out, _ = prepared
    rows = _manifest(out)
    report = (out / "report.md").read_text()
    for name, (status, reason) in BAD_FILES.items():
        assert rows[name]["status"] == status, name
        assert rows[name]["reason"].startswith(reason), (name, rows[name]["reason"])
        assert f"`{name}`" in report, name
    for name, flag in QUIRKS.items():
        assert rows[name]["status"] == "ok", (name, rows[name]["reason"])
        assert flag in rows[name]["flags"].split(";"), (name, rows[name]["flags"])
    good = [r for r in rows.values() if r["source"].split("/")[1].startswith("good_")]
    assert len(good) == 25 and all(r["status"] == "ok" for r in good)
    assert "README.txt" not in rows  # top-level files are not data


def test_near_duplicates_share_a_group_and_a_split(prepared):
    _, out, _ = prepared
    rows = _manifest(out)
    a, b = rows["with_mask/good_00.jpg"], rows["with_mask/good_00_resized.jpg"]
    assert a["near_dup_group"] and a["near_dup_group"] == b["near_dup_group"]
    assert a["split"] == b["split"]
    groups = {}
    for row in rows.values():
        if row["status"] == "ok":
            groups.setdefault(row["group"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in groups.values())


def test_cache_matches_manifest_and_loads_fast(prepared):
    _, out, meta = prepared
    rows = _manifest(out)
    total = 0
    for split in ("train", "val", "test"):
        for size in (32, 64):
            data = load_split(out, split, size)
            assert data.images.dtype.is_floating_point is False
            assert tuple(data.images.shape[1:]) == (3, size, size)
            assert len(data.labels) == len(data.sources) == data.images.shape[0]
            assert data.class_names == ["with_mask", "without_mask"]
        for source, label in zip(data.sources, data.labels.tolist(), strict=True):
            assert rows[source]["split"] == split and rows[source]["status"] == "ok"
            assert data.class_names[label] == rows[source]["label"]
        total += len(data.sources)
    assert total == sum(r["status"] == "ok" for r in rows.values())
    assert meta["counts"]["usable"] == {"with_mask": 19, "without_mask": 16}
    saved = json.loads((out / "prepare.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["versions"]["torch"]
    assert "prepare" in saved["command"] or saved["command"]
    for name in ("samples_with_mask.png", "samples_without_mask.png"):
        assert (out / "sheets" / name).stat().st_size > 1000


def test_flattened_alpha_shows_background_in_cache(prepared):
    _, out, _ = prepared
    data = load_split(out, _manifest(out)["with_mask/rgba.png"]["split"], 64)
    image = data.images[data.sources.index("with_mask/rgba.png")].numpy()
    # the transparent left band (source columns 0-19; the crop starts at column 8) is white
    assert (image[:, :, :5] == 255).all()
    assert not (image[:, :, 20:] == 255).all()


def test_load_split_errors_are_clear(prepared, tmp_path):
    _, out, _ = prepared
    with pytest.raises(MasksynthError, match="no 128 px cache"):
        load_split(out, "train", 128)
    with pytest.raises(MasksynthError, match="unknown split"):
        load_split(out, "holdout", 64)
    with pytest.raises(MasksynthError, match="not a prepared folder"):
        load_split(tmp_path, "train", 64)


def test_rerun_reuses_and_changes_rebuild(prepared, monkeypatch):
    raw, out, meta = prepared
    calls = []
    real = ingest_module.process_file
    monkeypatch.setattr(
        ingest_module, "process_file", lambda *a, **k: calls.append(a[1].relpath) or real(*a, **k)
    )
    again = prepare(raw, out, CONFIG)
    assert again["fingerprint"] == meta["fingerprint"] and calls == []
    assert again["started_utc"] == meta["started_utc"]  # nothing was redone

    # A new seed re-splits but decodes nothing again.
    reseeded = prepare(raw, out, PrepareConfig(**{**CONFIG.to_dict(), "seed": 5}))
    assert calls == [] and reseeded["fingerprint"] != meta["fingerprint"]

    # New file times with the same bytes (a copy, a touch) decode nothing again.
    for path in raw.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = prepare(raw, out, CONFIG)
    assert calls == [] and touched["fingerprint"] == meta["fingerprint"]
    assert touched["listing_fingerprint"] != meta["listing_fingerprint"]
    assert "reused" not in touched  # the stage ran (its listing changed), decoding nothing

    # A changed file is processed again, alone.
    time.sleep(0.01)
    write(raw / "without_mask/good_03.jpg", encode(picture(999), "JPEG"))
    prepare(raw, out, CONFIG)
    assert calls == ["without_mask/good_03.jpg"]

    # An option that changes processing rebuilds everything.
    calls.clear()
    prepare(raw, out, PrepareConfig(**{**CONFIG.to_dict(), "face_margin": 0.3}))
    assert len(calls) > 40


def test_group_by_keeps_people_together(messy_folder, tmp_path):
    for k in range(12):
        write(
            messy_folder / f"without_mask/0_0_alice_{k:04d}.jpg", encode(picture(500 + k), "JPEG")
        )
        write(messy_folder / f"without_mask/1_0_bob_{k:04d}.jpg", encode(picture(600 + k), "JPEG"))
    config = PrepareConfig(**{**CONFIG.to_dict(), "group_by": r"^\d+_\d+_([a-z]+)_\d+"})
    prepare(messy_folder, tmp_path / "prep", config)
    rows = _manifest(tmp_path / "prep")
    for person in ("alice", "bob"):
        members = [r for r in rows.values() if r["group_key"] == person]
        assert len(members) == 12 and len({r["split"] for r in members}) == 1


def test_preset_split_folders_are_kept(tmp_path):
    raw = tmp_path / "raw"
    for split, offset in (("train", 0), ("test", 100)):
        for label in ("with_mask", "without_mask"):
            for k in range(10):
                seed = offset + k + (50 if label == "with_mask" else 0)
                write(raw / split / label / f"{k}.jpg", encode(picture(seed), "JPEG"))
    meta = prepare(raw, tmp_path / "prep", CONFIG)
    assert meta["preset_split"] is True
    rows = _manifest(tmp_path / "prep")
    assert all(r["split"] == "test" for s, r in rows.items() if s.startswith("test/"))
    train_side = {r["split"] for s, r in rows.items() if s.startswith("train/")}
    assert train_side == {"train", "val"}  # val is carved out of train, never out of test
    assert meta["counts"]["splits"]["test"] == {"with_mask": 10, "without_mask": 10}


def test_user_errors(tmp_path, messy_folder):
    with pytest.raises(MasksynthError, match="not a folder"):
        prepare(tmp_path / "missing", tmp_path / "out", CONFIG)
    (tmp_path / "flat").mkdir()
    write(tmp_path / "flat/a.jpg", encode(picture(1), "JPEG"))
    with pytest.raises(MasksynthError, match="not an ImageFolder"):
        prepare(tmp_path / "flat", tmp_path / "out", CONFIG)
    with pytest.raises(MasksynthError, match="positive class 'dog'"):
        prepare(messy_folder, tmp_path / "out", PrepareConfig(positive_class="dog", workers=1))


def test_class_with_nothing_usable_fails_after_writing_the_report(tmp_path):
    raw = tmp_path / "raw"
    for k in range(3):
        write(raw / f"with_mask/{k}.jpg", encode(picture(k), "JPEG"))
    write(raw / "without_mask/empty.jpg", b"")
    with pytest.raises(MasksynthError, match="class 'without_mask' has no usable image"):
        prepare(raw, tmp_path / "prep", CONFIG)
    assert "`without_mask/empty.jpg` | empty file" in (tmp_path / "prep/report.md").read_text()


def test_interrupted_run_resumes_from_saved_work(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for k in range(450):
        label = "with_mask" if k % 2 else "without_mask"
        write(raw / f"{label}/{k:03d}.png", encode(picture(k, (40, 40)), "PNG"))
    out = tmp_path / "prep"
    # Ctrl-C after 300 files: the first chunk of 256 is saved, the rest is not
    process = interrupted(
        "masksynth.data.ingest:process_file",
        300,
        "SIGINT",
        ["prepare", str(raw), "--out", str(out), "--size", "32", "--workers", "1"],
    )
    stderr = process.stderr
    assert process.returncode == 130, stderr
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert not (out / "prepare.json").exists()

    calls = []
    real = ingest_module.process_file
    monkeypatch.setattr(
        ingest_module, "process_file", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    meta = prepare(raw, out, PrepareConfig(sizes=(32,), workers=1))
    # what finished before the interruption was kept: only the rest is processed again
    assert 450 - 300 <= len(calls) <= 450 - 299
    assert sum(meta["counts"]["usable"].values()) == 450


def test_parallel_workers_give_the_same_result(messy_folder, tmp_path):
    one = prepare(messy_folder, tmp_path / "one", CONFIG)
    two = prepare(
        messy_folder, tmp_path / "two", PrepareConfig(**{**CONFIG.to_dict(), "workers": 2})
    )
    assert one["counts"] == two["counts"]
    for split in ("train", "val", "test"):
        a, b = load_split(tmp_path / "one", split, 64), load_split(tmp_path / "two", split, 64)
        assert a.sources == b.sources and np.array_equal(a.images.numpy(), b.images.numpy())
    assert os.path.getsize(tmp_path / "one/manifest.csv") == os.path.getsize(
        tmp_path / "two/manifest.csv"
    )


def test_person_keys_in_file_names_keep_each_person_in_one_split(tmp_path):
    raw = tmp_path / "raw"
    for p in range(12):  # 12 people, 4 photos each, in RMFD's `<a>_<b>_<person>_<nnnn>` form
        name = "P" + "".join(chr(97 + int(d)) for d in str(p))
        label = "with_mask" if p % 2 else "without_mask"
        for k in range(4):
            image = encode(picture(100 * p + k, (40, 40)), "PNG")
            write(raw / f"{label}/{p}_{k % 2}_{name}_{k:04d}.png", image)
    meta = prepare(raw, tmp_path / "prep", CONFIG)  # group_by 'auto' by default
    assert meta["group_by"]["source"] == "auto-detected"
    assert meta["group_by"]["keys"] == 12
    rows = _manifest(tmp_path / "prep")
    splits_of: dict[str, set] = {}
    for row in rows.values():
        splits_of.setdefault(row["group_key"], set()).add(row["split"])
    assert len(splits_of) == 12 and all(len(s) == 1 for s in splits_of.values())
    assert "auto-detected" in (tmp_path / "prep" / "report.md").read_text()

    off = prepare(raw, tmp_path / "off", PrepareConfig(**{**CONFIG.to_dict(), "group_by": "none"}))
    assert off["group_by"] == {"source": "none", "pattern": None}
    assert off["fingerprint"] != meta["fingerprint"]


def test_output_inside_the_data_folder_is_refused(messy_folder):
    with pytest.raises(MasksynthError, match="inside the data folder"):
        prepare(messy_folder, messy_folder / "with_mask" / "prep", CONFIG)
    assert not (messy_folder / "with_mask" / "prep").exists()


def test_a_copied_folder_or_other_cache_sizes_keep_the_prepared_identity(tmp_path):
    """Later stages key on the prepared data's content: a copy with new file times, or
    another set of cached sizes, does not make them redo their work."""
    raw = tmp_path / "raw"
    for k in range(6):
        write(raw / f"with_mask/{k}.jpg", encode(picture(300 + k), "JPEG"))
        write(raw / f"without_mask/{k}.jpg", encode(picture(400 + k), "JPEG"))
    first = prepare(raw, tmp_path / "a", CONFIG)
    copy = tmp_path / "copy"
    shutil.copytree(raw, copy, copy_function=shutil.copy)  # new modification times
    second = prepare(copy, tmp_path / "b", CONFIG)
    assert second["listing_fingerprint"] != first["listing_fingerprint"]
    assert second["fingerprint"] == first["fingerprint"]
    sizes = prepare(copy, tmp_path / "c", PrepareConfig(**{**CONFIG.to_dict(), "sizes": (32,)}))
    assert sizes["fingerprint"] == first["fingerprint"]
    # ... while new content does change it
    write(copy / "with_mask/0.jpg", encode(picture(4242), "JPEG"))
    assert prepare(copy, tmp_path / "d", CONFIG)["fingerprint"] != first["fingerprint"]
