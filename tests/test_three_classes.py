"""More than two classes end to end ("mask worn incorrectly" as a third): prepare, a GAN
conditional on three classes, sample, train-classifier on real + synthetic, evaluate with
per-class recall and a 3x3 confusion matrix, the positive class still chosen by name."""

import json

import numpy as np
import pytest
from conftest import run_cli
from imaging import encode, picture, write

CLASSES = ("mask_incorrect", "with_mask", "without_mask")


@pytest.fixture(scope="module")
def three_prep(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    for c, name in enumerate(CLASSES):
        for k in range(30):
            image = picture(3000 + 100 * c + k, (64, 64))
            write(root / f"raw/{name}/{k:02d}.png", encode(image, "PNG"))
    result = run_cli(
        "prepare", str(root / "raw"), "--out", str(root / "prep"), "--size", "64",
        "--no-face-crop", "--split", "0.6,0.2,0.2", "--workers", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return root


def test_three_classes_from_gan_to_evaluation(three_prep):
    root = three_prep
    prep, gan, synth, clf = (root / n for n in ("prep", "gan", "synth", "clf"))
    result = run_cli(
        "train-gan", str(prep), "--out", str(gan), "--preset", "quick", "--minutes", "0",
        "--epochs", "1", "--g-width", "8", "--d-width", "8", "--batch-size", "8",
        "--no-final-metrics", "--device", "cpu", "--precision", "fp32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((gan / "gan.json").read_text())
    assert record["classes"] == list(CLASSES) and record["config"]["mode"] == "conditional"
    result = run_cli("sample", str(gan), "--out", str(synth), "--n-per-class", "5")
    assert result.returncode == 0, result.stderr
    for name in CLASSES:
        assert len(list((synth / name).glob("*.png"))) == 5
    result = run_cli(
        "audit", str(synth), "--train", str(prep), "--out", str(root / "audit"),
        "--inception-per-class", "5", "--inception-train", "10", "--workers", "1",
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    audit = json.loads((root / "audit" / "audit.json").read_text())
    assert audit["verdict"] in ("pass", "warn", "fail") and audit["measures"]
    result = run_cli(
        "train-classifier", str(prep), "--out", str(clf), "--synthetic", str(synth),
        "--preset", "paper", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
        "--precision", "fp32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    train = json.loads((clf / "train.json").read_text())
    assert train["composition"]["synthetic"] == dict.fromkeys(CLASSES, 5)
    result = run_cli(
        "evaluate", str(clf / "classifier.pt"), str(prep), "--json", str(root / "m.json"),
        "--device", "cpu",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((root / "m.json").read_text())
    matrix = np.array(metrics["confusion_matrix"]["counts"])
    assert metrics["confusion_matrix"]["classes"] == list(CLASSES) and matrix.shape == (3, 3)
    assert matrix.sum() == metrics["n"] == 18  # 6 test images per class
    assert (matrix.sum(1) == 6).all()  # rows: the true class
    for k, name in enumerate(CLASSES):
        recall = metrics["per_class"][name]["recall"]
        assert recall["n"] == 6 and recall["k"] == matrix[k, k]
    # sensitivity is still the named positive class against the rest
    assert metrics["sensitivity"]["n"] == 6 and metrics["specificity"]["n"] == 12
