"""The classifier stages: training, the checkpoint round trip and evaluation of raw photos."""

import dataclasses
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import EVALUATE_KEYS, run_cli
from imaging import write
from PIL import Image

from masksynth.classify.augment import Augment
from masksynth.classify.checkpoint import load_classifier
from masksynth.classify.evaluate import evaluate
from masksynth.classify.models import build_model
from masksynth.classify.train import train_classifier
from masksynth.config import classifier_config
from masksynth.data import load_split
from masksynth.errors import MasksynthError


@pytest.fixture(scope="module")
def tiny_classifier(tiny_prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    config = classifier_config("paper", epochs=2, batch_size=16, device="cpu", precision="fp32")
    summary = train_classifier(tiny_prep, out, config)
    return out / "classifier.pt", summary


def test_training_writes_a_complete_run(tiny_classifier, tiny_prep):
    checkpoint, summary = tiny_classifier
    assert summary["composition"]["real"] == {"with_mask": 24, "without_mask": 24}
    history = [json.loads(line) for line in (checkpoint.parent / "history.jsonl").open()]
    assert len(history) == 2
    # the kept epoch is the best on validation: balanced accuracy, then lower loss
    keys = [(h["val_balanced_accuracy"] or 0.0, -h["val_loss"]) for h in history]
    assert summary["best_epoch"] == 1 + keys.index(max(keys))
    model, meta = load_classifier(checkpoint, torch.device("cpu"))
    assert meta["class_names"] == ["with_mask", "without_mask"]
    assert meta["positive_class"] == "without_mask" and meta["size"] == 64
    assert meta["prepare"]["face_crop"] is False and len(meta["mean"]) == 3
    # Reusing a finished run does not train again.
    again = train_classifier(
        tiny_prep,
        checkpoint.parent,
        classifier_config("paper", epochs=2, batch_size=16, device="cpu", precision="fp32"),
    )
    assert again["train_seconds"] == summary["train_seconds"]


def test_round_trip_raw_photo_to_prediction(tiny_classifier, tiny_prep, tmp_path):
    """A raw photo, prepared on the fly from the checkpoint's settings, scores exactly as the
    cached copy of the same photo."""
    checkpoint, _ = tiny_classifier
    test = load_split(tiny_prep, "test", 64)
    raw_root = tiny_prep.parent / "raw"
    for source in test.sources:
        write(tmp_path / "photos" / source, (raw_root / source).read_bytes())
    cached, cached_pred = evaluate(checkpoint, tiny_prep, "test", device="cpu")
    raw, raw_pred = evaluate(checkpoint, tmp_path / "photos", device="cpu")
    order = [raw_pred.sources.index(s) for s in cached_pred.sources]
    assert np.allclose(cached_pred.y_score, raw_pred.y_score[order], atol=1e-6)
    assert set(raw) == EVALUATE_KEYS and raw["confusion"] == cached["confusion"]


def test_evaluate_raw_dev_photos_with_odd_formats(tiny_classifier, real_data, tmp_path):
    checkpoint, _ = tiny_classifier
    folder = tmp_path / "unseen"
    jpeg = real_data / "with_mask/0_0_0.jpg"
    photo = Image.open(jpeg).convert("RGB")
    (folder / "with_mask").mkdir(parents=True)
    shutil.copy(jpeg, folder / "with_mask/plain.jpg")
    photo.save(folder / "with_mask/png_named.jpg", format="PNG")
    photo.save(folder / "with_mask/photo.webp", format="WEBP")
    rgba = photo.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "with_mask/rgba.png")
    shutil.copy(real_data / "with_mask/with_mask287.png", folder / "with_mask/palette.png")
    (folder / "with_mask/broken.jpg").write_bytes(jpeg.read_bytes()[:300])
    shutil.copy(real_data / "without_mask/0_0_anhu_0004.jpg", folder / "without_mask.jpg")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "masksynth.cli",
            "evaluate",
            str(checkpoint),
            str(folder),
            "--json",
            str(tmp_path / "m.json"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "with_mask/broken.jpg" in result.stderr  # reported by name, and the run went on
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == EVALUATE_KEYS
    assert metrics["n"] == 5 and sum(metrics["confusion"].values()) == 5
    # only with_mask photos: nothing is positive, so sensitivity cannot be measured
    assert metrics["sensitivity"]["value"] is None and metrics["roc_auc"] is None
    assert metrics["specificity"]["n"] == 5


def test_unknown_class_folder_is_a_clear_error(tiny_classifier, tmp_path):
    checkpoint, _ = tiny_classifier
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "cats/a.png")
    with pytest.raises(MasksynthError, match="does not know"):
        evaluate(checkpoint, tmp_path, device="cpu")


def test_imagenet_resnet18_without_cache_names_the_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MasksynthError, match="--weights none.*efficientnet_lite0"):
        build_model("resnet18", 2, "imagenet")


def test_efficientnet_lite0_loads_its_shipped_imagenet_weights():
    model = build_model("efficientnet_lite0", 2, "imagenet")
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 2)
    scratch = build_model("efficientnet_lite0", 2, "none")
    first = next(iter(model.state_dict()))
    assert not torch.equal(model.state_dict()[first], scratch.state_dict()[first])


def test_augmentation_is_per_image_and_keeps_shape():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64).repeat(8, 1, 1, 1)
    y = Augment()(x)
    assert y.shape == x.shape
    assert not torch.allclose(y[0], y[1])  # each image has its own transform
    identity = Augment(rotation_deg=0, scale=(1, 1), translate=0, flip=False)(x)
    assert torch.allclose(identity, x, atol=1e-5)


class _RunsCode:
    """Unpickling this would create a file: proof that loading ran the file's code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evaluate_cli(checkpoint, data):
    return subprocess.run(
        [sys.executable, "-m", "masksynth.cli", "evaluate", str(checkpoint), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bad_checkpoints_are_refused_in_one_line_without_running_code(
    tiny_classifier, tiny_prep, tmp_path
):
    checkpoint, _ = tiny_classifier
    marker = tmp_path / "code_ran"
    with_code = tmp_path / "with_code.pt"
    torch.save({"format": 1, "payload": _RunsCode(marker)}, with_code)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    # a plain pickle of a newer protocol: torch's warning about it must not reach the user
    raw_pickle = tmp_path / "raw_pickle.pt"
    raw_pickle.write_bytes(pickle.dumps({"payload": _RunsCode(marker)}, protocol=4))
    wrong_shapes = tmp_path / "wrong_shapes.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["fc.weight"] = torch.zeros(5, 3)
    torch.save(state, wrong_shapes)
    expected = {
        with_code: "holds Python objects other than tensors",
        raw_pickle: "holds Python objects other than tensors",
        truncated: "damaged or not a torch file",
        wrong_shapes: "does not fit its network",
        tmp_path / "missing.pt": "no classifier checkpoint",
    }
    for path, message in expected.items():
        with pytest.raises(MasksynthError, match=message):
            load_classifier(path, torch.device("cpu"))
    # the command line prints the same refusals as one line (each call starts a Python with
    # torch: two kinds, one of them the pickle whose torch warning must stay hidden)
    for path in (raw_pickle, truncated):
        message = expected[path]
        result = _evaluate_cli(path, tiny_prep)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], lines
        assert "weights_only" not in result.stderr
    assert not marker.exists()


def _synthetic_folder(root, seed):
    for k, name in enumerate(("with_mask", "without_mask")):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(seed * 100 + k * 10 + i).integers(0, 256, (64, 64, 3))
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_classifier_is_reused_only_when_built_from_the_same_inputs(tiny_prep, tmp_path):
    from masksynth.config import PrepareConfig
    from masksynth.data.prepare import prepare
    from masksynth.fileio import read_csv, read_json, write_json

    config = classifier_config("paper", epochs=1, batch_size=16, device="cpu", precision="fp32")
    out = tmp_path / "clf"
    checkpoint = out / "classifier.pt"

    def trained_anew(*args, **kwargs) -> bool:
        stamp = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
        summary = train_classifier(*args, **kwargs)
        assert bool(summary.get("reused")) == (checkpoint.stat().st_mtime_ns == stamp)
        return not summary.get("reused")

    assert trained_anew(tiny_prep, out, config)
    assert not trained_anew(tiny_prep, out, config)  # the same inputs: reused
    assert trained_anew(tiny_prep, out, dataclasses.replace(config, lr=5e-4))
    degraded = dataclasses.replace(config, degrade=0.3)
    assert trained_anew(tiny_prep, out, degraded)
    assert not trained_anew(tiny_prep, out, degraded)
    # trained before the camera degradations gained one: it has not seen grey faces
    record = read_json(out / "train.json")
    record["inputs"]["degradations"] = record["inputs"]["degradations"][:-1]
    write_json(out / "train.json", record)
    assert trained_anew(tiny_prep, out, degraded)
    synthetic = _synthetic_folder(tmp_path / "synth", seed=1)
    assert trained_anew(tiny_prep, out, config, synthetic)
    assert not trained_anew(tiny_prep, out, config, synthetic)
    # the synthetic folder changed under the same name: its images are not the ones trained on
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(synthetic / "with_mask" / "0.png")
    assert trained_anew(tiny_prep, out, config, synthetic)
    # the photos split anew: the old train split may hold today's test photos
    resplit = tmp_path / "prep2"
    prepare(
        tiny_prep.parent / "raw",
        resplit,
        PrepareConfig(sizes=(64,), face_crop=False, split=(0.6, 0.2, 0.2), seed=1, workers=1),
    )
    assert trained_anew(resplit, out, config)
    trained_on = {r["source"] for r in read_csv(out / "training_set.csv") if r["origin"] == "real"}
    assert trained_on == set(load_split(resplit, "train", 64).sources)
    assert not trained_on & set(load_split(resplit, "test", 64).sources)


def test_the_stored_temperature_is_applied_by_evaluate(tiny_classifier, tiny_prep, tmp_path):
    """train-classifier fits T on val and stores it; evaluate's probabilities are
    softmax(logits / T), and another stored T changes them accordingly."""
    from masksynth.classify.checkpoint import predict_logits, save_classifier

    checkpoint, summary = tiny_classifier
    model, meta = load_classifier(checkpoint, torch.device("cpu"))
    record = summary["calibration"]
    assert meta["temperature"] == record["temperature"] > 0 and record["fitted_on"] == "val"
    assert record["nll_after"] <= record["nll_before"] + 1e-6  # what T is fitted for
    test = load_split(tiny_prep, "test", 64)
    logits = predict_logits(model, test.images, meta, torch.device("cpu"))
    positive = meta["class_names"].index("without_mask")
    metrics, predictions = evaluate(checkpoint, tiny_prep, "test", device="cpu")
    expected = torch.softmax(logits / meta["temperature"], 1)[:, positive].numpy()
    assert np.allclose(predictions.y_score, expected, atol=1e-6)
    assert metrics["calibration"]["temperature"] == meta["temperature"]
    hotter = tmp_path / "hot.pt"
    meta.pop("format")
    save_classifier(hotter, model, {**meta, "temperature": 7.0})
    _, hot = evaluate(hotter, tiny_prep, "test", device="cpu")
    assert np.allclose(hot.y_score, torch.softmax(logits / 7.0, 1)[:, positive].numpy(), atol=1e-6)
    assert not np.allclose(hot.y_score, predictions.y_score)


def test_evaluate_robustness_reports_every_degradation(tiny_classifier, tiny_prep, tmp_path):
    from masksynth.classify.degrade import ROBUSTNESS

    checkpoint, _ = tiny_classifier
    json_out = str(tmp_path / "m.json")
    result = run_cli(
        "evaluate", str(checkpoint), str(tiny_prep), "--robustness", "--json", json_out,
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    rows = metrics["robustness"]["rows"]
    assert [(r["degradation"], r["strength"]) for r in rows] == [
        (name, s) for name, _, strengths, _ in ROBUSTNESS for s in strengths
    ]
    assert all(0 <= r["balanced_accuracy"] <= 1 for r in rows)
    assert metrics["robustness"]["clean_balanced_accuracy"] == metrics["balanced_accuracy"]
    for plot in ("robustness.png", "reliability.png"):
        assert Image.open(tmp_path / plot).size[0] > 100


def test_camera_degradations_in_training_follow_the_seed(tiny_prep, tmp_path):
    """--degrade changes what the model learns from, reproducibly for a seed."""

    def weights(name: str, degrade: float) -> dict:
        config = classifier_config(
            "paper", epochs=1, batch_size=16, degrade=degrade, device="cpu", precision="fp32"
        )
        train_classifier(tiny_prep, tmp_path / name, config)
        model, _ = load_classifier(tmp_path / name / "classifier.pt", torch.device("cpu"))
        return model.state_dict()

    first, again, plain = weights("a", 0.5), weights("b", 0.5), weights("c", 0.0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], plain[k]) for k in first)
    with pytest.raises(MasksynthError, match="--degrade"):
        train_classifier(
            tiny_prep, tmp_path / "d", classifier_config("paper", degrade=1.5, device="cpu")
        )
