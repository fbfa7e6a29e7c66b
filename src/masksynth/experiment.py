"""The main job: the paper's two scenarios end to end, on the same splits and seeds.

prepare -> train-gan -> sample -> per seed: scenario 1 (real + classic augmentation),
scenario 2 (real + classic augmentation + synthetic) and the control (synthetic only),
each evaluated on the same real test split -> statistics -> report. Every stage writes its
own folder under RUN and is reused when the command is run again, so an interrupted
experiment resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from masksynth.classify.evaluate import evaluate
from masksynth.classify.train import train_classifier
from masksynth.config import (
    AuditConfig,
    ClassifierConfig,
    ExperimentConfig,
    PrepareConfig,
    gan_config,
)
from masksynth.data.prepare import prepare
from masksynth.errors import MasksynthError
from masksynth.fileio import read_json, write_json
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.sample import sample
from masksynth.gan.train import train_gan
from masksynth.metrics.stats import mcnemar_test, mean_sd, paired_bootstrap
from masksynth.runinfo import run_record

log = logging.getLogger(__name__)
SCENARIOS = ("real", "real+synthetic", "synthetic-only")


def run_experiment(data_dir: str | Path, run_dir: str | Path, config: ExperimentConfig) -> dict:
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, function, *args, **kwargs):
        t0 = time.perf_counter()
        result = function(*args, **kwargs)
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)
        return result

    sizes = tuple(sorted({64, config.size}))
    prep_dir = run_dir / "prep"
    log.info("1/4 prepare")
    prep = timed(
        "prepare", prepare, data_dir, prep_dir, PrepareConfig(sizes=sizes, group_by=config.group_by)
    )

    log.info("2/4 train the GAN (%s preset)", config.gan_preset)
    gan_dir = run_dir / "gan"
    gan = timed("train-gan", _train_or_resume_gan, prep_dir, gan_dir, config)
    synth_dir = run_dir / "synthetic"
    timed(
        "sample",
        sample,
        gan_dir,
        synth_dir,
        config.synthetic_per_class,
        0,
        config.device,
        privacy_filter=config.privacy_filter,
        prep_dir=prep_dir,
    )
    audit = None
    if config.audit:
        log.info("privacy audit of the synthetic set")
        audit = timed("audit", _audit_or_reuse, synth_dir, prep_dir, run_dir / "audit", config)

    log.info(
        "3/4 classifiers: %d seed(s) x %s",
        config.seeds,
        ", ".join(s for s in SCENARIOS if s != "synthetic-only" or config.control),
    )
    runs: dict[str, list[dict]] = {
        s: [] for s in SCENARIOS if s != "synthetic-only" or config.control
    }
    for seed in range(config.seeds):
        for scenario in runs:
            if scenario == "synthetic-only" and seed > 0:
                continue  # a sanity control: one seed tells whether synthetic faces carry the task
            runs[scenario].append(
                timed(
                    f"classifier {scenario}",
                    _classify,
                    scenario,
                    seed,
                    prep_dir,
                    synth_dir,
                    run_dir,
                    config,
                )
            )

    log.info("4/4 statistics and report")
    positive = prep["classes"].index(prep["positive_class"])
    comparisons = _compare(runs["real"], runs["real+synthetic"], positive)
    results = {
        "stage": "experiment",
        "data_dir": str(data_dir.resolve()),
        "config": config.to_dict(),
        "positive_class": prep["positive_class"],
        "classes": prep["classes"],
        "prepare": {"dir": str(prep_dir), "counts": prep["counts"]},
        "gan": {
            "dir": str(gan_dir),
            "preset": config.gan_preset,
            "epochs": gan.get("epochs_done"),
            "train_seconds": gan.get("train_seconds"),
            "metrics": gan.get("metrics"),
        },
        "synthetic_dir": str(synth_dir),
        "privacy_filter": read_json(synth_dir / "sample.json").get("privacy_filter"),
        "audit": _audit_summary(audit, run_dir / "audit"),
        "scenarios": {name: [_public(r) for r in results_] for name, results_ in runs.items()},
        "summary": {name: _summarise(results_) for name, results_ in runs.items()},
        "comparison": comparisons,
        "timings_s": {
            "this_run": round(time.perf_counter() - started, 1),
            "this_run_by_stage": timings,
            "all_stages": round(
                _stage_seconds(prep, gan, runs) + ((audit or {}).get("seconds") or 0.0), 1
            ),
        },
        **run_record(),
    }
    write_json(run_dir / "results.json", results)
    from masksynth.report.experiment_report import write_experiment_report

    write_experiment_report(run_dir, results, runs)
    return results


def _audit_or_reuse(synth_dir: Path, prep_dir: Path, audit_dir: Path, config) -> dict:
    """The audit of this synthetic set; an earlier audit of the same sample is reused."""
    from masksynth.privacy.audit import run_audit

    sample_id = read_json(synth_dir / "sample.json").get("started_utc")
    previous = audit_dir / "audit.json"
    if previous.is_file() and read_json(previous).get("sample_started_utc") == sample_id:
        log.info("%s already audits this sample: reusing it", audit_dir)
        return read_json(previous)
    subsets = {}
    if config.audit_inception:
        n = config.audit_inception
        subsets = dict(inception_synthetic=n, inception_holdout=n, inception_train=2 * n)
    result = run_audit(synth_dir, prep_dir, audit_dir, AuditConfig(device=config.device, **subsets))
    result["sample_started_utc"] = sample_id
    write_json(previous, result)
    return result


def _audit_summary(audit: dict | None, audit_dir: Path) -> dict | None:
    if audit is None:
        return None
    return {
        "dir": str(audit_dir),
        "verdict": audit["verdict"],
        "statement": audit["statement"],
        "quality_verdict": audit["quality_verdict"],
        "seconds": audit.get("seconds"),
        "measures": {
            name: {k: m[k] for k in ("value", "threshold", "verdict")}
            for name, m in {**audit["measures"], **audit["quality"]}.items()
        },
        "dp": (audit.get("gan") or {}).get("dp"),
    }


def _train_or_resume_gan(prep_dir: Path, gan_dir: Path, config: ExperimentConfig) -> dict:
    gan_cfg = gan_config(
        config.gan_preset,
        epochs=config.gan_epochs,
        device=config.device,
        metrics_samples=config.gan_metrics_samples,
    )
    summary_file = gan_dir / "gan.json"
    if summary_file.is_file():
        summary = read_json(summary_file)
        if summary.get("stopped") == "done" and summary.get("epochs_done") == gan_cfg.epochs:
            log.info("GAN already trained in %s: reusing it", gan_dir)
            return summary
    resume = checkpoint_path(gan_dir).is_file()
    return train_gan(prep_dir, gan_dir, gan_cfg, resume=resume)


def _classify(
    scenario: str,
    seed: int,
    prep_dir: Path,
    synth_dir: Path,
    run_dir: Path,
    config: ExperimentConfig,
) -> dict:
    folder = run_dir / "classifiers" / scenario / f"seed{seed}"
    classifier_cfg = ClassifierConfig(
        arch=config.arch,
        weights=config.weights,
        size=config.size,
        epochs=config.classifier_epochs,
        seed=seed,
        device=config.device,
    )
    started = time.perf_counter()
    synthetic = synth_dir if scenario != "real" else None
    summary = train_classifier(
        prep_dir, folder, classifier_cfg, synthetic, synthetic_only=scenario == "synthetic-only"
    )
    metrics, predictions = evaluate(
        folder / "classifier.pt", prep_dir, "test", folder / "misclassified.png", config.device
    )
    write_json(folder / "test_metrics.json", metrics)
    np.savez(
        folder / "test_predictions.npz",
        y_true=predictions.y_true,
        y_score=predictions.y_score,
        sources=np.array(predictions.sources),
    )
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    return {
        "seed": seed,
        "dir": str(folder),
        "checkpoint": str(folder / "classifier.pt"),
        "composition": summary["composition"],
        "best_epoch": summary["best_epoch"],
        "train_seconds": summary["train_seconds"],
        "total_seconds": round(summary["train_seconds"] + time.perf_counter() - started, 1)
        if summary.get("reused")
        else round(time.perf_counter() - started, 1),
        "test": metrics,
        "history": history,
        "y_true": predictions.y_true,
        "y_score": predictions.y_score,
        "misclassified": str(folder / "misclassified.png"),
    }


def _stage_seconds(prep: dict, gan: dict, runs: dict[str, list[dict]]) -> float:
    """Time every stage took when it ran, read from its own records (reused stages too)."""
    gan_total = gan.get("total_seconds") or gan.get("train_seconds") or 0.0
    classifiers = sum(r["total_seconds"] for results in runs.values() for r in results)
    return prep.get("seconds", 0.0) + gan_total + classifiers


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("y_true", "y_score", "history")}


def _value(metrics: dict, key: str):
    value = metrics[key]
    return value["value"] if isinstance(value, dict) else value


def _summarise(results: list[dict]) -> dict:
    keys = ("sensitivity", "specificity", "accuracy", "balanced_accuracy", "f1", "roc_auc")
    return {key: mean_sd([_value(r["test"], key) for r in results]) for key in keys}


def _compare(real: list[dict], augmented: list[dict], positive_index: int) -> dict:
    """Scenario 2 against scenario 1, seed by seed on the same test images."""
    per_seed = []
    for a, b in zip(real, augmented, strict=True):
        if not np.array_equal(a["y_true"], b["y_true"]):
            raise MasksynthError("scenarios were evaluated on different test images")
        positive = a["y_true"] == positive_index
        correct_a = (a["y_score"] >= 0.5) == positive
        correct_b = (b["y_score"] >= 0.5) == positive
        per_seed.append(
            {
                "seed": a["seed"],
                "mcnemar": mcnemar_test(correct_a, correct_b),
                "bootstrap_accuracy_difference": paired_bootstrap(
                    correct_a, correct_b, seed=a["seed"]
                ),
            }
        )
    diffs = [s["bootstrap_accuracy_difference"]["difference"] for s in per_seed]
    return {
        "a": "real",
        "b": "real+synthetic",
        "per_seed": per_seed,
        "accuracy_difference": mean_sd(diffs),
    }
