"""Integration: prepare a ~220-image subset of the real dev data (face detection included)."""

import csv
import random
import shutil
import subprocess
import sys
from collections import defaultdict

import pytest

from masksynth.data import load_split

QUIRK_FILES = [
    "with_mask/with_mask129.jpg",  # PNG (RGBA) named .jpg
    "with_mask/black10.webp",
    "with_mask/black19.webp",
    "with_mask/with_mask287.png",  # palette
    "with_mask/1_0_1_copy_13.jpg",  # 26x37
    "with_mask/1_4_16.jpg",  # 30x40
    "with_mask/246.jpg",  # 29x84
]
PERSON = r"^\d+_\d+_([A-Za-z]+)_\d+"


@pytest.fixture(scope="module")
def subset(real_data, tmp_path_factory):
    with open(real_data / "file_map.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = random.Random(0)
    chosen = set(QUIRK_FILES)
    chosen |= set(rng.sample(sorted(r["file"] for r in rows if r["mode"] == "RGBA"), 5))
    by_group = defaultdict(list)
    for r in rows:
        if r["dup_group_d4"]:
            by_group[r["dup_group_d4"]].append(r["file"])
    near_groups = [by_group[g] for g in sorted(by_group)[:8]]
    for group in near_groups:
        chosen |= set(group)
    people = [
        r["file"]
        for r in rows
        if r["file"].startswith("without_mask/0_0_anhu")
        or r["file"].startswith("without_mask/1_0_anhu")
    ][:12]
    chosen |= set(people)
    for label in ("with_mask", "without_mask"):
        pool = sorted(r["file"] for r in rows if r["label"] == label and r["file"] not in chosen)
        chosen |= set(rng.sample(pool, 90))
    root = tmp_path_factory.mktemp("real") / "raw"
    for name in sorted(chosen):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real_data / name, root / name)
    out = root.parent / "prep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "masksynth.cli",
            "prepare",
            str(root),
            "--out",
            str(out),
            "--group-by",
            PERSON,
            "--size",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with open(out / "manifest.csv", newline="") as handle:
        manifest = {row["source"]: row for row in csv.DictReader(handle)}
    return out, manifest, near_groups, people


def test_quirks_of_the_real_data_are_reported(subset):
    out, manifest, _, _ = subset
    report = (out / "report.md").read_text()
    assert "ext_mismatch" in manifest["with_mask/with_mask129.jpg"]["flags"]
    assert manifest["with_mask/with_mask129.jpg"]["format"] == "PNG"
    assert manifest["with_mask/with_mask129.jpg"]["mode"] == "RGBA"
    assert "| `with_mask/with_mask129.jpg` | PNG |" in report
    for webp in ("with_mask/black10.webp", "with_mask/black19.webp"):
        assert manifest[webp]["format"] == "WEBP"
        assert f"| `{webp}` | WEBP | `.webp` |" in report
    assert manifest["with_mask/with_mask287.png"]["mode"] == "P"
    assert "| `with_mask/with_mask287.png` | P | PNG |" in report
    for tiny in QUIRK_FILES[4:]:
        assert "tiny" in manifest[tiny]["flags"] and manifest[tiny]["status"] == "ok"
        assert f"`{tiny}`" in report
    assert all(row["status"] == "ok" for row in manifest.values())


def test_faces_are_found_in_most_photos_of_both_classes(subset):
    _, manifest, _, _ = subset
    for label, minimum in (("with_mask", 0.8), ("without_mask", 0.95)):
        rows = [r for r in manifest.values() if r["label"] == label]
        found = sum(1 for r in rows if r["face_score"])
        assert found / len(rows) >= minimum, (label, found, len(rows))
        assert all(("no_face" in r["flags"]) != bool(r["face_score"]) for r in rows)


def test_near_duplicates_and_people_stay_in_one_split(subset):
    out, manifest, near_groups, people = subset
    for group in near_groups:
        assert len({manifest[f]["near_dup_group"] for f in group}) == 1, group
        assert len({manifest[f]["split"] for f in group}) == 1, group
    assert len({manifest[f]["split"] for f in people}) == 1
    assert {manifest[f]["group_key"] for f in people} == {"anhu"}
    sizes = {s: len(load_split(out, s, 64).sources) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == len(manifest)
    assert sizes["train"] > sizes["test"] > sizes["val"] > 0
