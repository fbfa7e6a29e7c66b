"""`masksynth predict` on real dev photos: every face of a frame, cropped as in training,
videos frame by frame, bad files reported by name."""

import csv
import io
import json
import shutil
import signal

import cv2
import numpy as np
import pytest
from conftest import interrupted, photo_with_one_face, run_cli, side_by_side
from PIL import Image

from masksynth.classify.evaluate import evaluate
from masksynth.config import Decision
from masksynth.data import load_split
from masksynth.deploy.predict import predict
from masksynth.deploy.predictor import FacePredictor
from masksynth.errors import MasksynthError


def test_a_photo_is_cropped_and_scored_exactly_as_evaluate_does(model):
    checkpoint, root = model
    predictor = FacePredictor(checkpoint, "cpu")
    _, scored = evaluate(checkpoint, root / "raw", device="cpu")
    key = predictor.probability_key
    assert key == "p_without_mask"
    checked = 0
    for source, score in list(zip(scored.sources, scored.y_score, strict=True))[::6]:
        rgb = np.asarray(Image.open(root / "raw" / source).convert("RGB"))
        faces = predictor.predict(rgb)
        if not faces:
            continue  # evaluate falls back to the centre square; predict reports no face
        # the most confident face comes first: the one training and evaluate use
        assert faces[0][key] == pytest.approx(float(score), abs=1e-5), source
        checked += 1
    assert checked >= 5


def test_every_face_of_a_frame_gets_its_own_record(model):
    checkpoint, root = model
    predictor = FacePredictor(checkpoint, "cpu")
    left, right = photo_with_one_face(root, "with_mask"), photo_with_one_face(root, "without_mask")
    frame = side_by_side(left, right)
    faces = predictor.predict(frame)
    assert len(faces) == 2
    centres = sorted(f["box"][0] + f["box"][2] / 2 for f in faces)
    assert centres[0] < 320 < centres[1]  # one face in each half
    alone = [predictor.predict(side_by_side(p, size=(320, 480)))[0] for p in (left, right)]
    assert all(0.0 <= f["p_without_mask"] <= 1.0 and f["label"] for f in faces + alone)
    assert all(abs(f["p_with_mask"] + f["p_without_mask"] - 1) < 1e-4 for f in faces)
    grey = np.full((480, 640, 3), 128, np.uint8)
    assert predictor.predict(grey) == []


def test_the_decision_threshold_and_uncertain_band(model):
    checkpoint, _ = model
    predictor = FacePredictor(checkpoint, "cpu", Decision(threshold=0.7, uncertain_band=0.1))
    face = {"box": [0, 0, 1, 1], "face_score": 0.9}
    low, near, high = (predictor.decide(face, np.array([1 - p, p])) for p in (0.55, 0.65, 0.85))
    assert (low["label"], low["uncertain"]) == ("with_mask", False)
    assert (near["label"], near["uncertain"]) == ("with_mask", True)
    assert (high["label"], high["uncertain"], high["confidence"]) == ("without_mask", False, 0.85)
    with pytest.raises(MasksynthError, match="threshold"):
        Decision(threshold=1.5)


def test_a_video_is_read_frame_by_frame_and_annotated(model, tmp_path):
    checkpoint, root = model
    frame = side_by_side(photo_with_one_face(root, "without_mask", 1))
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 480))
    for i in range(8):
        writer.write(np.roll(frame, 4 * i, axis=1)[:, :, ::-1].copy())
    writer.release()
    out = tmp_path / "out"
    summary = predict(FacePredictor(checkpoint, "cpu"), [str(path)], out, annotate=True, every=2)
    records = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert summary["frames"] == 4 and [r["frame"] for r in records] == [0, 2, 4, 6]
    assert [r["time_s"] for r in records] == [0.0, 0.2, 0.4, 0.6]
    assert all(r["status"] == "ok" for r in records)
    annotated = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    annotated.release()


def test_records_reach_the_file_as_each_frame_is_done(model, tmp_path):
    """A run killed (-9) part-way, as a camera run ends, keeps every finished frame's
    complete records in OUT/predictions.jsonl."""
    checkpoint, root = model
    folder = tmp_path / "drop"
    folder.mkdir()
    for i in range(4):
        shutil.copy(photo_with_one_face(root, "with_mask", i), folder / f"p{i}.jpg")
    out = tmp_path / "out"
    args = ["predict", str(checkpoint), str(folder), "--out", str(out)]
    killed = interrupted("masksynth.deploy.predict:safe_records", 3, "SIGKILL", args)
    assert killed.returncode == -signal.SIGKILL
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # whole lines only
    assert [r["source"] for r in records] == ["drop/p0.jpg", "drop/p1.jpg"]


def test_bad_files_are_reported_by_name_and_the_run_goes_on(model, tmp_path):
    checkpoint, root = model
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(photo_with_one_face(root, "with_mask"), folder / "good.jpg")
    data = photo_with_one_face(root, "with_mask").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    Image.new("RGB", (200, 200), (90, 90, 90)).save(folder / "wall.png")
    result = run_cli("predict", str(checkpoint), str(folder), "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = {r["source"]: r for r in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["drop/good.jpg"]["status"] == "ok" and rows["drop/good.jpg"]["label"]
    assert rows["drop/wall.png"]["status"] == "no_face"
    assert "truncated" in rows["drop/truncated.jpg"]["reason"]
    assert "empty" in rows["drop/empty.png"]["reason"]
    assert "not an image" in rows["drop/notes.txt"]["reason"]
    assert rows["drop/broken.mp4"]["reason"] == "not a readable video"
    for name in ("truncated.jpg", "empty.png", "notes.txt", "broken.mp4"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_user_errors_are_one_line(model, tmp_path):
    checkpoint, root = model
    missing = run_cli("predict", str(checkpoint), str(tmp_path / "nowhere.jpg"))
    assert missing.returncode == 2 and "nowhere.jpg: no such file" in missing.stderr
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    bad = run_cli("predict", str(bogus), str(photo_with_one_face(root, "with_mask")))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    camera = run_cli("predict", str(checkpoint), "7", "--max-frames", "1")
    assert camera.returncode == 0
    assert json.loads(camera.stdout)["reason"] == "camera cannot be opened"


def test_onnx_export_gives_torch_probabilities(model, tmp_path):
    """The exported model (normalisation, temperature and softmax inside) agrees with torch
    within 1e-4 on every prepared face, and `predict` runs on the .onnx file alone."""
    checkpoint, root = model
    onnx_path = tmp_path / "model.onnx"
    result = run_cli("export", str(checkpoint), "--onnx", str(onnx_path))
    assert result.returncode == 0, result.stderr
    torch_run, onnx_run = FacePredictor(checkpoint, "cpu"), FacePredictor(onnx_path, "cpu")
    assert onnx_run.meta["checkpoint_sha256"] == torch_run.meta["checkpoint_sha256"]
    for split in ("train", "val", "test"):
        crops = load_split(root / "prep", split, 64).images.numpy()
        expected, got = torch_run.probabilities(crops), onnx_run.probabilities(crops)
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    photo = photo_with_one_face(root, "without_mask")
    in_memory = predict_records(checkpoint, photo, backend="onnxruntime")
    from_file = predict_records(onnx_path, photo)
    assert [r["label"] for r in in_memory] == [r["label"] for r in from_file]
    key = torch_run.probability_key
    torch_p = predict_records(checkpoint, photo)[0][key]
    assert abs(from_file[0][key] - torch_p) < 1e-4


def predict_records(model_file, photo, backend="torch"):
    result = run_cli("predict", str(model_file), str(photo), "--backend", backend)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_annotated_copies_never_overwrite_each_other(model, tmp_path):
    checkpoint, root = model
    for folder, label in (("a", "with_mask"), ("b", "without_mask")):
        (tmp_path / folder).mkdir()
        shutil.copy(photo_with_one_face(root, label), tmp_path / folder / "shot.jpg")
    out = tmp_path / "out"
    inputs = [str(tmp_path / "a" / "shot.jpg"), str(tmp_path / "b" / "shot.jpg")]
    summary = predict(FacePredictor(checkpoint, "cpu"), inputs, out, annotate=True)
    assert summary["faces"] == 2
    written = sorted(p.name for p in (out / "annotated").iterdir())
    assert written == ["shot-2.jpg", "shot.jpg"]
    drawn = np.asarray(Image.open(out / "annotated" / "shot.jpg"))
    original = np.asarray(Image.open(tmp_path / "a" / "shot.jpg").convert("RGB"))
    assert drawn.shape == original.shape and np.abs(drawn.astype(int) - original).max() > 100
