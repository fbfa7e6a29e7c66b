"""`masksynth watch`: each dropped file classified once, recorded, moved; kill -9 loses
nothing and repeats nothing."""

import csv
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import interrupted, photo_with_one_face, run_cli
from PIL import Image

from masksynth.deploy.watch import is_complete


def _drop(inbox, root):
    """Six photos (two in a subfolder), a truncated one, a text file, a wall without a face,
    and an upload still in progress."""
    photos = [
        photo_with_one_face(root, k, i) for k in ("with_mask", "without_mask") for i in (0, 1, 2)
    ]
    (inbox / "cam2").mkdir(parents=True)
    for i, photo in enumerate(photos):
        shutil.copy(photo, inbox / ("cam2" if i >= 4 else "") / f"shot{i}.jpg")
    data = photos[0].read_bytes()
    (inbox / "cut.jpg").write_bytes(data[: len(data) // 3])
    (inbox / "readme.txt").write_text("not a photo")
    Image.new("RGB", (300, 300), (90, 90, 90)).save(inbox / "wall.png")
    (inbox / "incoming.jpg.part").write_bytes(data[:1000])
    return 9  # files to process (the .part is not one)


def _rows(out):
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        files = db.execute("SELECT name, status, reason, faces, destination, state FROM files")
        files = files.fetchall()
        faces = db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
    return files, faces


def _watch(checkpoint, inbox, out):
    args = ["watch", str(checkpoint), str(inbox), "--out", str(out), "--once", "--settle", "0"]
    return args


def _check_final(inbox, out, expected):
    files, faces = _rows(out)
    names = [f[0] for f in files]
    assert len(names) == len(set(names)) == expected, names  # each file once
    assert all(f[5] == "done" for f in files)
    left = sorted(p.name for p in inbox.rglob("*") if p.is_file())
    assert left == ["incoming.jpg.part"]  # only the upload in progress stays
    for _, status, _, _, destination, _ in files:
        assert (out / destination).is_file(), destination
        assert destination.startswith("failed/" if status == "failed" else "processed/")
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == faces + sum(1 for f in files if f[3] == 0)
    # the appended CSV holds the database's rows in its order: each file's faces together
    per_file = [(f[0], max(f[3], 1)) for f in files]
    assert [r["file"] for r in rows] == [name for name, n in per_file for _ in range(n)]
    return {f[0]: f for f in files}


def test_each_dropped_file_is_classified_once_and_moved(model, tmp_path):
    checkpoint, root = model
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = _drop(inbox, root)
    result = run_cli(*_watch(checkpoint, inbox, out))
    assert result.returncode == 0, result.stderr
    files = _check_final(inbox, out, expected)
    assert files["shot0.jpg"][1] == "ok" and files["cam2/shot5.jpg"][3] == 1
    assert files["wall.png"][1] == "no_face"
    assert files["cut.jpg"][1] == "failed" and "truncated" in files["cut.jpg"][2]
    assert files["readme.txt"][1] == "failed" and "not an image" in files["readme.txt"][2]
    # a later drop with a name already used goes beside the first, not over it
    shutil.copy(photo_with_one_face(root, "with_mask"), inbox / "shot0.jpg")
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    files, _ = _rows(out)
    assert [f[4] for f in files if f[0] == "shot0.jpg"] == [
        "processed/shot0.jpg",
        "processed/shot0-2.jpg",
    ]


def test_the_csv_is_appended_and_repaired_from_the_database(model, tmp_path):
    """A tail a kill left unrecorded is cut off; a deleted or edited CSV is written anew,
    the same."""
    checkpoint, root = model
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = _drop(inbox, root)
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    complete = (out / "results.csv").read_bytes()
    with open(out / "results.csv", "ab") as handle:
        handle.write(b"shot9.jpg,0123,ok,,processed/sh")  # appended, never recorded
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    assert (out / "results.csv").read_bytes() == complete
    (out / "results.csv").unlink()
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    assert (out / "results.csv").read_bytes() == complete
    # the same header over other rows, longer than the record: not the CSV it vouches for
    header = complete.split(b"\n", 1)[0] + b"\n"
    (out / "results.csv").write_bytes(header + b"x,y\n" * len(complete))
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    assert (out / "results.csv").read_bytes() == complete
    _check_final(inbox, out, expected)


@pytest.mark.parametrize(
    ("target", "calls"),
    [
        ("masksynth.deploy.watch:safe_records", 3),  # while classifying the 3rd file
        ("masksynth.deploy.watch:_record_result", 2),  # committed, not yet moved
        ("masksynth.deploy.watch:_move_file", 4),  # moved, not yet marked done
    ],
)
def test_kill_9_at_any_step_loses_nothing_and_repeats_nothing(model, tmp_path, target, calls):
    checkpoint, root = model
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = _drop(inbox, root)
    killed = interrupted(target, calls, "SIGKILL", _watch(checkpoint, inbox, out))
    assert killed.returncode == -signal.SIGKILL
    before, _ = _rows(out)
    assert len(before) < expected  # it was killed part-way
    result = run_cli(*_watch(checkpoint, inbox, out))
    assert result.returncode == 0, result.stderr
    _check_final(inbox, out, expected)


def test_kill_9_at_random_moments(model, tmp_path):
    checkpoint, root = model
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    expected = _drop(inbox, root)
    rng = random.Random(5)
    command = [sys.executable, "-m", "masksynth.cli", *_watch(checkpoint, inbox, out)]
    for _ in range(4):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 6.0))  # start-up takes ~3 s, a file a fraction of one
        child.kill()
        child.wait()
    result = run_cli(*_watch(checkpoint, inbox, out))
    assert result.returncode == 0, result.stderr
    _check_final(inbox, out, expected)


def test_a_file_still_being_written_is_not_taken(tmp_path):
    path, seen = tmp_path / "growing.jpg", {}
    path.write_bytes(b"\xff\xd8" + b"\x00" * 100)
    assert not is_complete(path, seen, settle=0.2)  # first sight
    time.sleep(0.3)
    with open(path, "ab") as handle:
        handle.write(b"\x00" * 100)  # the upload goes on
    assert not is_complete(path, seen, settle=0.2)
    time.sleep(0.3)
    assert is_complete(path, seen, settle=0.2)  # unchanged for the settle time


def test_a_file_replaced_between_kill_and_restart_is_classified_anew(model, tmp_path):
    """Killed after recording readme.txt (the 2nd file) but before moving it; a new file of
    that name arrives before the restart: the old decision is not applied to the new file."""
    checkpoint, root = model
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    _drop(inbox, root)
    target = "masksynth.deploy.watch:_record_result"
    killed = interrupted(target, 2, "SIGKILL", _watch(checkpoint, inbox, out))
    assert killed.returncode == -signal.SIGKILL
    shutil.copy(photo_with_one_face(root, "without_mask"), inbox / "readme.txt")
    assert run_cli(*_watch(checkpoint, inbox, out)).returncode == 0
    files, _ = _rows(out)
    readme = [f for f in files if f[0] == "readme.txt"]
    assert [(f[1], f[4]) for f in readme] == [("failed", ""), ("ok", "processed/readme.txt")]
    assert "left the inbox" in readme[0][2]
