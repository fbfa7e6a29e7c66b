"""A tiny experiment end to end through the command line (few images, one epoch)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EVALUATE_KEYS

from masksynth.fileio import read_csv
from masksynth.metrics.stats import mcnemar_test


def _run(raw: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "masksynth.cli",
            "experiment",
            str(raw),
            "--out",
            str(out),
            "--preset",
            "quick",
            "--seeds",
            "2",
            "--synthetic-per-class",
            "6",
            "--classifier-epochs",
            "1",
            "--gan-epochs",
            "1",
            "--gan-metrics-samples",
            "6",
            "--tstr-steps",
            "3",
            "--tstr-per-class",
            "8",
            "--device",
            "cpu",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def experiment_run(tiny_prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    result = _run(tiny_prep.parent / "raw", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_results_json_is_complete(experiment_run):
    results = json.loads((experiment_run / "results.json").read_text())
    assert set(results["scenarios"]) == {"real", "real+synthetic", "synthetic-only"}
    for runs in results["scenarios"].values():
        assert [r["seed"] for r in runs] == [0, 1]  # quick's control also trains both seeds
        for r in runs:  # paths relative to the run folder, so it can be moved
            assert not Path(r["checkpoint"]).is_absolute()
            assert (experiment_run / r["checkpoint"]).is_file()
            assert set(r["test"]) == EVALUATE_KEYS | {"robustness"}
            assert r["test"]["n"] == 16  # the same real test split for every scenario
    composition = results["scenarios"]["real+synthetic"][0]["composition"]
    assert composition["synthetic"] == {"with_mask": 6, "without_mask": 6}
    # the control trains on its own, larger sample (--tstr-per-class) and no real image
    assert results["scenarios"]["synthetic-only"][0]["composition"] == {
        "real": {"with_mask": 0, "without_mask": 0},
        "synthetic": {"with_mask": 8, "without_mask": 8},
    }
    control = results["control_synthetic"]
    assert control["dir"] == "synthetic-control" and control["n_per_class"] == 8
    # the compute time of all stages adds up every stage's own record, both samples included
    seconds = [
        json.loads((experiment_run / record).read_text())[key]
        for record, key in [
            ("prep/prepare.json", "seconds"),
            ("gan/gan.json", "total_seconds"),
            ("synthetic/sample.json", "seconds"),
            ("synthetic-control/sample.json", "seconds"),
            ("audit/audit.json", "seconds"),
        ]
    ]
    assert min(seconds) > 0
    classifiers = sum(r["total_seconds"] for runs in results["scenarios"].values() for r in runs)
    total = results["timings_s"]["all_stages"]
    assert total == pytest.approx(sum(seconds) + classifiers, abs=0.2)
    assert control["sample_id"] != results["sample_id"]
    assert len(read_csv(experiment_run / "synthetic-control" / "manifest.csv")) == 16
    # the control trains at least --tstr-steps steps: 3 epochs of its 16 images (one batch)
    epochs = {
        name: len((experiment_run / runs[0]["dir"] / "history.jsonl").read_text().splitlines())
        for name, runs in results["scenarios"].items()
    }
    assert epochs == {"real": 1, "real+synthetic": 1, "synthetic-only": 3}
    assert len(results["comparison"]["per_seed"]) == 2
    # the comparison pairs each seed's two classifiers on the same saved test predictions
    for seed, paired in enumerate(results["comparison"]["per_seed"]):
        saved = [
            np.load(
                experiment_run / results["scenarios"][name][seed]["dir"] / "test_predictions.npz"
            )
            for name in ("real", "real+synthetic")
        ]
        positive = saved[0]["y_true"] == 1
        correct = [(s["y_score"] >= 0.5) == positive for s in saved]
        assert paired["mcnemar"] == mcnemar_test(*correct)
    assert set(results["stages"].values()) == {"computed"}
    assert results["test_leakage"]["test_images_in_training"] == 0
    assert results["summary"]["real"]["accuracy"]["n"] == 2
    assert set(results["gan"]["metrics"]) == {"with_mask", "without_mask"}
    assert results["positive_class"] == "without_mask" and results["command"]
    # the robustness table and calibration, averaged over the seeds of each scenario
    real = results["summary"]["real"]
    assert real["ece"]["n"] == 2 and 0 <= real["ece"]["mean"] <= 1
    seed_rows = [r["test"]["robustness"]["rows"] for r in results["scenarios"]["real"]]
    first = real["robustness"][0]
    assert first["degradation"] == "face side" and first["balanced_accuracy"]["n"] == 2
    assert first["balanced_accuracy"]["mean"] == pytest.approx(
        sum(rows[0]["balanced_accuracy"] for rows in seed_rows) / 2, abs=1e-4
    )


def test_report_is_self_contained(experiment_run):
    html = (experiment_run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5  # figures and grids embedded
    assert "src='figures/" not in html
    md = (experiment_run / "report.md").read_text()
    for text in (
        "Training composition",
        "Test metrics",
        "McNemar",
        "camera degradations",
        "JPEG quality",
        "Synthetic faces",
    ):
        assert text in md and text in html
    assert "8 per class, sampled for it alone in `synthetic-control/`" in md
    host = json.loads((experiment_run / "results.json").read_text())["host"]
    assert host["threads"] >= 1 and host["cpu"]  # the report says where its times were taken
    assert f"on {host['cpu']}, {host['threads']} threads" in md
    for figure in ("confusion.png", "roc.png", "training.png", "robustness.png", "reliability.png"):
        assert (experiment_run / "figures" / figure).stat().st_size > 5000


def test_rerun_reuses_every_stage(experiment_run, tiny_prep):
    stamps = {p: p.stat().st_mtime_ns for p in experiment_run.rglob("classifier.pt")}
    stamps[experiment_run / "gan/checkpoint.pt"] = (
        (experiment_run / "gan/checkpoint.pt").stat().st_mtime_ns
    )
    result = _run(tiny_prep.parent / "raw", experiment_run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    results = json.loads((experiment_run / "results.json").read_text())
    assert set(results["stages"].values()) == {"reused"}, results["stages"]


def test_fewer_control_seeds_reuse_the_control_and_report_only_those(experiment_run, tiny_prep):
    from masksynth.config import experiment_config
    from masksynth.errors import MasksynthError

    result = _run(tiny_prep.parent / "raw", experiment_run, "--control-seeds", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((experiment_run / "results.json").read_text())
    assert set(results["stages"].values()) == {"reused"}, results["stages"]
    assert [r["seed"] for r in results["scenarios"]["synthetic-only"]] == [0]
    assert results["summary"]["synthetic-only"]["balanced_accuracy"]["n"] == 1
    assert results["summary"]["real"]["balanced_accuracy"]["n"] == 2
    with pytest.raises(MasksynthError, match="--control-seeds"):
        experiment_config("quick", control_seeds=0)


def test_degradations_retrain_every_classifier_and_the_report_says_so(experiment_run, tiny_prep):
    """`--degrade` (best's 0.3) changes how each classifier trains, not the GAN or its faces."""
    assert "with camera degradations" not in (experiment_run / "report.md").read_text()
    result = _run(tiny_prep.parent / "raw", experiment_run, "--degrade", "0.3")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((experiment_run / "results.json").read_text())
    assert {s: v for s, v in results["stages"].items() if v == "computed"} == {
        f"classifier {scenario}": "computed"
        for scenario in ("real", "real+synthetic", "synthetic-only")
    }
    for runs in results["scenarios"].values():
        for r in runs:
            config = json.loads((experiment_run / r["dir"] / "train.json").read_text())["config"]
            assert config["degrade"] == 0.3
    md = (experiment_run / "report.md").read_text()
    assert "1 epochs, with camera degradations (each with probability 0.3)" in md


def test_another_gan_seed_trains_a_new_gan_and_redoes_what_it_feeds(experiment_run, tiny_prep):
    """A GAN seed changes the faces: the GAN, the samples, the audit and the classifiers that
    see synthetic faces are made anew; the real-only classifiers do not depend on them."""
    raw = tiny_prep.parent / "raw"
    assert _run(raw, experiment_run).returncode == 0  # this file's defaults, whatever ran before
    before = json.loads((experiment_run / "results.json").read_text())
    result = _run(raw, experiment_run, "--gan-seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((experiment_run / "results.json").read_text())
    reused = {s for s, v in results["stages"].items() if v != "computed"}
    assert reused == {"prepare", "classifier real"}, results["stages"]
    assert results["config"]["gan_seed"] == 1
    assert json.loads((experiment_run / "gan/gan.json").read_text())["config"]["seed"] == 1
    assert results["sample_id"] != before["sample_id"]
    assert "GAN seed 1; 2 seed(s) of the classifier" in (experiment_run / "report.md").read_text()
    result = _run(raw, experiment_run, "--gan-seed", "-1")
    assert result.returncode == 2 and "--gan-seed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, not a traceback
    assert json.loads((experiment_run / "gan/gan.json").read_text())["config"]["seed"] == 1


def test_the_report_says_where_its_times_were_taken_and_what_they_leave_out():
    from masksynth.report.experiment_report import _times

    host = {
        "cpu": "Some CPU",
        "threads": 2,
        "cpu_native_bf16": True,
        "cpu_bf16_used": False,
        "gpu": None,
        "settings": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    }
    timings = {"all_stages": 600.0, "this_run": 660.0, "untimed": ["synthetic-control"]}
    text = _times({"timings_s": timings, "host": host})
    assert "10.0 min, not counting the sampling of `synthetic-control/`" in text
    assert "on Some CPU, 2 threads, native bf16 left unused" in text
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in text
    text = _times({"timings_s": {**timings, "untimed": []}, "host": {**host, "gpu": "A GPU"}})
    assert "not counting" not in text and "on A GPU," in text and "Some CPU" not in text
    old = _times({"timings_s": {"all_stages": 60.0, "this_run": 60.0}, "host": {"platform": "x"}})
    assert old.endswith("(this invocation: 1.0 min; finished stages are reused).")


def test_rerun_with_another_split_recomputes_every_later_stage(experiment_run, tiny_prep):
    """The issue's worst case: a new split must not reuse the GAN, sample, audit or classifiers
    built on the old one (their training photos would sit in the new test split)."""
    before = json.loads((experiment_run / "results.json").read_text())
    old_train = set(
        _sources(experiment_run / before["scenarios"]["real"][0]["dir"] / "training_set.csv")
    )
    # group the files by name across the classes (with_mask/07.png with without_mask/07.png):
    # 40 groups of two, a different split
    result = _run(tiny_prep.parent / "raw", experiment_run, "--group-by", r"^(\d\d)\.")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((experiment_run / "results.json").read_text())
    assert results["prepare"]["fingerprint"] != before["prepare"]["fingerprint"]
    assert set(results["stages"].values()) == {"computed"}, results["stages"]
    assert results["sample_id"] != before["sample_id"]
    assert results["test_leakage"]["test_images_in_training"] == 0
    test = json.loads((experiment_run / "prep" / "prepare.json").read_text())
    assert test["group_by"]["pattern"] == r"^(\d\d)\."
    new_train = set(
        _sources(experiment_run / results["scenarios"]["real"][0]["dir"] / "training_set.csv")
    )
    assert new_train != old_train  # the classifier was trained on the new train split


def _sources(training_set: Path) -> list[str]:
    return [r["source"] for r in read_csv(training_set) if r["origin"] == "real"]


def test_a_gan_moved_on_by_an_interrupted_resume_is_not_reused(tiny_prep, tmp_path):
    """gan.json of a finished run still says 'done' while a later resume, killed, has moved
    the checkpoint on: the experiment must not take that checkpoint for the finished run."""
    from conftest import interrupted

    from masksynth.config import experiment_config
    from masksynth.data.cache import read_prepared
    from masksynth.experiment import _train_or_resume_gan
    from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint

    gan_dir = tmp_path / "gan"
    config = experiment_config("quick", gan_epochs=1, gan_metrics_samples=4, device="cpu")
    fingerprint = read_prepared(tiny_prep)["fingerprint"]
    assert not _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config).get("reused")
    assert _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config)["reused"]
    # a resume to 2 epochs, killed right after it saved the end of epoch 2
    args = ["train-gan", str(tiny_prep), "--out", str(gan_dir), "--resume", "--epochs", "2"]
    result = interrupted("masksynth.gan.loop:save_checkpoint", 1, "SIGKILL", args)
    assert result.returncode == -9, result.stderr
    assert json.loads((gan_dir / "gan.json").read_text())["stopped"] == "done"
    assert load_checkpoint(checkpoint_path(gan_dir))["epoch"] == 2
    summary = _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config)
    assert not summary.get("reused") and summary["epochs_done"] == 1
    assert load_checkpoint(checkpoint_path(gan_dir))["epoch"] == 1


def test_a_reused_gan_is_measured_on_the_fakes_asked_for(tiny_prep, tmp_path):
    """Reusing a GAN does not reuse test metrics of another number of fakes: they are
    measured again from the checkpoint (not retrained), exactly as training measured them."""
    from masksynth.config import experiment_config
    from masksynth.data.cache import read_prepared
    from masksynth.experiment import _train_or_resume_gan
    from masksynth.gan.checkpoint import checkpoint_path

    gan_dir, ckpt = tmp_path / "gan", checkpoint_path(tmp_path / "gan")
    fingerprint = read_prepared(tiny_prep)["fingerprint"]

    def run(n: int) -> dict:
        config = experiment_config("quick", gan_epochs=1, gan_metrics_samples=n, device="cpu")
        return _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config)

    trained = run(4)
    stamp = ckpt.stat().st_mtime_ns
    more = run(6)
    assert more["reused"] and more["measured_again"] and ckpt.stat().st_mtime_ns == stamp
    assert {m["n_fake"] for m in more["metrics"].values()} == {6}
    assert json.loads((gan_dir / "metrics.json").read_text()) == more["metrics"]
    again = run(4)  # the training's own measurement, reproduced from the checkpoint
    assert again["reused"] and again["metrics"] == trained["metrics"]
    assert not run(4).get("measured_again")  # as asked now: kept as it is
    assert json.loads((gan_dir / "gan.json").read_text())["metrics"] == trained["metrics"]


def test_a_reused_gan_is_measured_through_the_presets_class_selection(tiny_prep, tmp_path):
    """A GAN trained with another class selection (a run setting: the recipe is the same) is
    reused, but its test metrics are measured again through the preset's selection."""
    import dataclasses

    from masksynth.config import experiment_config
    from masksynth.data.cache import read_prepared
    from masksynth.experiment import _gan_config, _train_or_resume_gan
    from masksynth.stages import gan_test_metrics, train_gan

    gan_dir = tmp_path / "gan"
    config = experiment_config("quick", gan_epochs=1, gan_metrics_samples=4, device="cpu")
    preset = _gan_config(config)
    assert preset.class_keep < 1
    every = train_gan(tiny_prep, gan_dir, dataclasses.replace(preset, class_keep=1.0))
    fingerprint = read_prepared(tiny_prep)["fingerprint"]
    reused = _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config)
    assert reused["reused"] and reused["measured_again"]
    assert reused["metrics_class_keep"] == preset.class_keep
    assert reused["metrics"] == gan_test_metrics(tiny_prep, gan_dir, 4, "cpu", preset.class_keep)
    assert every["metrics"] == gan_test_metrics(tiny_prep, gan_dir, 4, "cpu", 1.0)
    assert not _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config).get("measured_again")


def test_a_gan_budget_in_minutes_is_reused_resumed_or_trained_anew_as_asked(tiny_prep, tmp_path):
    """--gan-minutes is the GAN's budget (--gan-epochs caps it). The same budget reuses the
    run; a budget smaller than what the run has already trained trains anew (a resume would
    come back longer than asked); a larger one resumes it; 0 is refused in one line."""
    from masksynth.config import experiment_config
    from masksynth.data.cache import read_prepared
    from masksynth.errors import MasksynthError
    from masksynth.experiment import _train_or_resume_gan
    from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint

    gan_dir = tmp_path / "gan"
    fingerprint = read_prepared(tiny_prep)["fingerprint"]

    def run(minutes: float) -> dict:
        config = experiment_config(
            "quick", gan_epochs=2, gan_minutes=minutes, gan_metrics_samples=4, device="cpu"
        )
        return _train_or_resume_gan(tiny_prep, gan_dir, fingerprint, config)

    first = run(1.0)
    assert not first.get("reused") and first["epochs_done"] == 2
    assert first["config"]["minutes"] == 1.0 and first["config"]["epochs"] == 2
    assert run(1.0)["reused"]
    # far below a CPU epoch of this tiny run: the new run's plan keeps only the epoch it
    # must train (a quarter of the two epochs was flaky: the first epoch's warm-up is paid
    # once per process, so the new run's first epoch can take under an eighth of them)
    tight = 1e-4
    assert tight * 60 < load_checkpoint(checkpoint_path(gan_dir))["elapsed_s"]
    anew = run(tight)
    assert not anew.get("reused") and anew["epochs_done"] == 1
    assert anew["config"]["minutes"] == tight and not (gan_dir / "gan-resume.json").exists()
    longer = run(1.0)  # more time than it has trained: resumed to the epochs' cap
    assert not longer.get("reused") and longer["epochs_done"] == 2
    assert (gan_dir / "gan-resume.json").exists()
    with pytest.raises(MasksynthError, match="--gan-minutes must be above 0"):
        experiment_config("quick", gan_minutes=0.0)
    with pytest.raises(MasksynthError, match="--gan-metrics-samples must be >= 2"):
        experiment_config("quick", gan_metrics_samples=1)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "masksynth.cli",
            "experiment",
            str(tmp_path),
            "--out",
            str(tmp_path / "x"),
            "--gan-minutes",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "--gan-minutes must be above 0" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
