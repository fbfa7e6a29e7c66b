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
import math
import shutil
import time
from pathlib import Path

import numpy as np

from masksynth.classify.evaluate import evaluate
from masksynth.classify.train import CHECKPOINT, TRAINING_SET, train_classifier
from masksynth.config import (
    TEST,
    TRAIN,
    VAL,
    AuditConfig,
    ClassifierConfig,
    ExperimentConfig,
    GanConfig,
    PrepareConfig,
    gan_config,
)
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_csv, read_json, write_json
from masksynth.gan.checkpoint import checkpoint_path, load_checkpoint
from masksynth.gan.resume import gan_inputs, recorded_gan_inputs
from masksynth.metrics.stats import mcnemar_test, mean_sd, paired_bootstrap
from masksynth.privacy.audit import audit_inputs, run_audit
from masksynth.provenance import changes
from masksynth.report.experiment_report import write_experiment_report
from masksynth.runinfo import run_record
from masksynth.stages import gan_test_metrics, sample, train_gan

log = logging.getLogger(__name__)
SCENARIOS = ("real", "real+synthetic", "synthetic-only")
TSTR_MAX_EPOCHS = 50  # a tiny synthetic set reaches tstr_steps only by overfitting it


def run_experiment(data_dir: str | Path, run_dir: str | Path, config: ExperimentConfig) -> dict:
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # stage -> 'computed' | 'reused' in this run ('reused, measured again': a reused GAN
    # whose test metrics were measured anew on the fakes asked for)
    stages: dict[str, str] = {}
    started = time.perf_counter()

    def timed(name: str, function, *args, **kwargs):
        t0 = time.perf_counter()
        result = function(*args, **kwargs)
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t0, 1)
        reused = isinstance(result, dict) and result.get("reused")
        if stages.get(name) != "computed":
            stages[name] = "reused" if reused else "computed"
            if reused and result.get("measured_again"):
                stages[name] += ", measured again"
        return result

    sizes = tuple(sorted({64, config.size}))
    prep_dir = run_dir / "prep"
    log.info("1/4 prepare")
    prep = timed(
        "prepare", prepare, data_dir, prep_dir, PrepareConfig(sizes=sizes, group_by=config.group_by)
    )

    log.info("2/4 train the GAN (%s preset)", config.gan_preset)
    gan_dir = run_dir / "gan"
    gan = timed("train-gan", _train_or_resume_gan, prep_dir, gan_dir, prep["fingerprint"], config)

    def draw(folder: Path, n_per_class: int) -> dict:
        return sample(
            gan_dir,
            folder,
            n_per_class,
            0,
            config.device,
            privacy_filter=config.privacy_filter,
            prep_dir=prep_dir,
            matchers=config.matchers,
            # the preset's selection, also for a GAN reused from before it had one
            class_keep=_gan_config(config).class_keep,
        )

    synth_dir = run_dir / "synthetic"
    synthetic = timed("sample", draw, synth_dir, config.synthetic_per_class)
    control_dir, control = synth_dir, synthetic
    if config.control and config.tstr_per_class not in (None, config.synthetic_per_class):
        # TSTR may use more faces than scenario 2 adds to the real ones
        control_dir = run_dir / "synthetic-control"
        control = timed("sample (control)", draw, control_dir, config.tstr_per_class)
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
            if scenario == "synthetic-only" and seed >= config.control_seeds:
                continue
            runs[scenario].append(
                timed(
                    f"classifier {scenario}",
                    _classify,
                    scenario,
                    seed,
                    prep_dir,
                    control_dir if scenario == "synthetic-only" else synth_dir,
                    run_dir,
                    config,
                )
            )
    leakage = check_no_test_leakage(
        prep_dir, [run_dir / r["dir"] for results_ in runs.values() for r in results_]
    )

    log.info("4/4 statistics and report")
    samples = {synth_dir.name: synthetic, control_dir.name: control}  # by folder, each once
    all_stages, untimed = _stage_seconds(prep, gan, samples, audit, runs)
    positive = prep["classes"].index(prep["positive_class"])
    comparisons = _compare(runs["real"], runs["real+synthetic"], positive)
    results = {
        "stage": "experiment",
        "data_dir": str(data_dir.resolve()),
        "config": config.to_dict(),
        "positive_class": prep["positive_class"],
        "classes": prep["classes"],
        "prepare": {
            "dir": "prep",
            "fingerprint": prep["fingerprint"],
            "counts": prep["counts"],
            "group_by": prep.get("group_by"),
        },
        "splits_used": SPLIT_ROLES,
        "gan": {
            "dir": "gan",
            "preset": config.gan_preset,
            "epochs": gan.get("epochs_done"),
            "train_seconds": gan.get("train_seconds"),
            "metrics": gan.get("metrics"),
            # the share of fakes those metrics and the samples keep (gan.select)
            "class_keep": gan.get("metrics_class_keep", gan.get("config", {}).get("class_keep")),
        },
        "synthetic_dir": "synthetic",
        "sample_id": synthetic["sample_id"],
        "class_selection": synthetic.get("class_selection"),
        "privacy_filter": synthetic.get("privacy_filter"),
        "control_synthetic": {
            "dir": str(control_dir.relative_to(run_dir)),
            "n_per_class": control["n_per_class"],
            "sample_id": control["sample_id"],
            "privacy_filter": control.get("privacy_filter"),
        }
        if config.control
        else None,
        "audit": _audit_summary(audit),
        "test_leakage": leakage,
        "scenarios": {name: [_public(r) for r in results_] for name, results_ in runs.items()},
        "summary": {name: _summarise(results_) for name, results_ in runs.items()},
        "comparison": comparisons,
        "stages": stages,
        "timings_s": {
            "this_run": round(time.perf_counter() - started, 1),
            "this_run_by_stage": timings,
            "all_stages": round(all_stages, 1),
            "untimed": untimed,
        },
        **run_record(),
    }
    write_json(run_dir / "results.json", results)
    write_experiment_report(run_dir, results, runs)
    return results


# Which split each stage used: test data never influences training, filtering or selection.
SPLIT_ROLES = {
    "GAN training": TRAIN,
    "privacy filter calibration": "/".join(AuditConfig.filter_holdout),
    "classifier training": f"{TRAIN} (+ the synthetic set in scenario 2)",
    "classifier model selection": VAL,
    "classifier test metrics": TEST,
    "GAN quality (KID/FID/PRDC)": TEST,
    "privacy audit (held-out yardstick H)": "/".join(AuditConfig.holdout),
}


def check_no_test_leakage(prep_dir: Path, classifier_dirs: list[Path]) -> dict:
    """Refuse if any classifier trained on a test image (by file or by content)."""
    test = load_split(prep_dir, TEST, 64).sources
    sha = {r["source"]: r["sha256"] for r in read_csv(prep_dir / "manifest.csv")}
    test_files, test_content = set(test), {sha[s] for s in test}
    for folder in classifier_dirs:
        real = [r["source"] for r in read_csv(folder / TRAINING_SET) if r["origin"] == "real"]
        leaked = [s for s in real if s in test_files or sha.get(s) in test_content]
        if leaked:
            raise MasksynthError(
                f"{folder} was trained on {len(leaked)} image(s) of the current test split "
                f"(e.g. {leaked[0]}): its results would be meaningless"
            )
    return {
        "classifiers_checked": len(classifier_dirs),
        "test_images": len(test),
        "test_images_in_training": 0,
        "checked_by": "file name and sha256, against each classifier's training_set.csv",
    }


def _audit_or_reuse(synth_dir: Path, prep_dir: Path, audit_dir: Path, config) -> dict:
    """The audit of this synthetic set; an earlier audit of the same inputs is reused."""
    subsets = {}
    if config.audit_inception:
        n = config.audit_inception
        subsets = dict(inception_synthetic=n, inception_holdout=n, inception_train=2 * n)
    if config.matchers:
        subsets["matchers"] = tuple(config.matchers)
    audit_config = AuditConfig(device=config.device, **subsets)
    previous = audit_dir / "audit.json"
    if previous.is_file():
        why = changes(
            read_json(previous).get("inputs"), audit_inputs(synth_dir, prep_dir, audit_config)
        )
        if not why:
            log.info("%s already audits this sample: reusing it", audit_dir)
            return {**read_json(previous), "reused": True}
        log.info("%s: auditing anew (%s)", audit_dir, "; ".join(why))
    return run_audit(synth_dir, prep_dir, audit_dir, audit_config)


def _audit_summary(audit: dict | None) -> dict | None:
    if audit is None:
        return None
    return {
        "dir": "audit",
        "verdict": audit["verdict"],
        "statement": audit["statement"],
        "reasons": audit.get("reasons", []),
        "quality_verdict": audit["quality_verdict"],
        "holdout": audit["config"]["holdout"],
        "seconds": audit.get("seconds"),
        "measures": {
            name: {k: m[k] for k in ("value", "threshold", "verdict")}
            for name, m in {**audit["measures"], **audit["quality"]}.items()
        },
        "identity_calibration": audit.get("identity_calibration"),
        "dp": (audit.get("gan") or {}).get("dp"),
        "guarantee": audit.get("guarantee"),
    }


def _train_or_resume_gan(
    prep_dir: Path, gan_dir: Path, prep_fingerprint: str, config: ExperimentConfig
) -> dict:
    """Reuse a finished GAN of the same inputs, resume an unfinished one, else train anew."""
    gan_cfg = _gan_config(config)
    summary_file, ckpt = gan_dir / "gan.json", checkpoint_path(gan_dir)
    if summary_file.is_file() and ckpt.is_file():
        summary = read_json(summary_file)
        recorded = recorded_gan_inputs(summary.get("inputs"))
        why = changes(recorded, gan_inputs(prep_fingerprint, gan_cfg))
        state = load_checkpoint(ckpt)
        trained = state["epoch"]
        # finished: gan.json describes this very checkpoint (an interrupted resume moves it on)
        finished = summary.get("stopped") == "done" and summary.get(
            "checkpoint_sha256"
        ) == file_sha256(ckpt)
        ran = summary.get("config", {})
        # as long as asked now: the same budget, or the same epochs all trained
        same_length = (ran.get("minutes", 0.0), ran.get("epochs")) == (
            gan_cfg.minutes,
            gan_cfg.epochs,
        ) and (gan_cfg.minutes or trained == gan_cfg.epochs)
        if not why and finished and same_length:
            log.info("GAN already trained in %s from these inputs: reusing it", gan_dir)
            return {**_measured_as_asked(summary, prep_dir, gan_dir, gan_cfg), "reused": True}
        budget = gan_cfg.minutes * 60
        # a run of another budget that has already trained longer than this one allows
        # would come back from a resume longer than asked
        over_budget = bool(budget) and not same_length and state["elapsed_s"] > budget
        if not why and trained <= gan_cfg.epochs and not over_budget:
            return train_gan(prep_dir, gan_dir, gan_cfg, resume=True)
        if trained > gan_cfg.epochs:
            why.append(f"epochs: the checkpoint has {trained}, now {gan_cfg.epochs}")
        if over_budget:
            why.append(
                f"budget: the checkpoint has trained {state['elapsed_s'] / 60:.3g} min, "
                f"now {gan_cfg.minutes:g}"
            )
        log.warning("%s: training the GAN anew (%s)", gan_dir, "; ".join(why))
    if gan_dir.exists():  # stale or unfinished-without-record: it is this experiment's own folder
        shutil.rmtree(gan_dir)
    return train_gan(prep_dir, gan_dir, gan_cfg)


def _gan_config(config: ExperimentConfig) -> GanConfig:
    """The GAN preset with the experiment's overrides: --gan-minutes is a training budget
    (--gan-epochs then caps it); --gan-epochs alone trains exactly those epochs."""
    if config.gan_minutes is not None:
        minutes = config.gan_minutes
    else:
        minutes = 0.0 if config.gan_epochs else None
    return gan_config(
        config.gan_preset,
        epochs=config.gan_epochs,
        minutes=minutes,
        device=config.device,
        metrics_samples=config.gan_metrics_samples,
        seed=config.gan_seed,
    )


def _measured_as_asked(summary: dict, prep_dir: Path, gan_dir: Path, gan_cfg: GanConfig) -> dict:
    """A reused GAN's test metrics, measured again when they came from another number of
    fakes per class than asked now (or were never measured): no retraining for that."""
    counts = {scores.get("n_fake") for scores in (summary.get("metrics") or {}).values()}
    # the class selection they were measured through: the run's own unless measured again
    kept = summary.get("metrics_class_keep", summary.get("config", {}).get("class_keep", 1.0))
    if not gan_cfg.final_metrics or (
        counts == {gan_cfg.metrics_samples} and kept == gan_cfg.class_keep
    ):
        return summary
    recorded = "/".join(str(c) for c in sorted(c for c in counts if c is not None)) or "no"
    log.info(
        "%s: its test metrics are from %s fakes per class, class keep %g; measuring them on "
        "%d, class keep %g",
        gan_dir,
        recorded,
        kept,
        gan_cfg.metrics_samples,
        gan_cfg.class_keep,
    )
    metrics = gan_test_metrics(
        prep_dir, gan_dir, gan_cfg.metrics_samples, gan_cfg.device, gan_cfg.class_keep
    )
    write_json(gan_dir / "metrics.json", metrics)
    summary = {**summary, "metrics": metrics, "metrics_class_keep": gan_cfg.class_keep}
    write_json(gan_dir / "gan.json", summary)
    return {**summary, "measured_again": True}


def _classify(
    scenario: str,
    seed: int,
    prep_dir: Path,
    synth_dir: Path,
    run_dir: Path,
    config: ExperimentConfig,
) -> dict:
    folder = run_dir / "classifiers" / scenario / f"seed{seed}"
    epochs = config.classifier_epochs
    if scenario == "synthetic-only":  # enough steps to converge on the synthetic set
        drawn = read_json(synth_dir / "sample.json")
        images = drawn["n_per_class"] * len(drawn["classes"])
        per_epoch = math.ceil(images / ClassifierConfig.batch_size)
        epochs = max(epochs, min(math.ceil(config.tstr_steps / per_epoch), TSTR_MAX_EPOCHS))
    classifier_cfg = ClassifierConfig(
        arch=config.arch,
        weights=config.weights,
        size=config.size,
        epochs=epochs,
        degrade=config.degrade,
        seed=seed,
        device=config.device,
    )
    started = time.perf_counter()
    synthetic = synth_dir if scenario != "real" else None
    summary = train_classifier(
        prep_dir, folder, classifier_cfg, synthetic, synthetic_only=scenario == "synthetic-only"
    )
    metrics, predictions = evaluate(
        folder / CHECKPOINT, prep_dir, TEST, folder / "misclassified.png", config.device, True
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
        "reused": bool(summary.get("reused")),
        "dir": str(folder.relative_to(run_dir)),
        "checkpoint": str((folder / CHECKPOINT).relative_to(run_dir)),
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
        "misclassified": str((folder / "misclassified.png").relative_to(run_dir)),
    }


def _stage_seconds(
    prep: dict, gan: dict, samples: dict[str, dict], audit: dict | None, runs: dict
) -> tuple[float, list[str]]:
    """Time every stage took when it ran, read from its own records (reused stages too), and
    the sample folders whose records hold no time (drawn before sample.json kept it)."""
    gan_total = gan.get("total_seconds") or gan.get("train_seconds") or 0.0
    untimed = [folder for folder, s in samples.items() if s.get("seconds") is None]
    classifiers = sum(r["total_seconds"] for results in runs.values() for r in results)
    total = (
        prep.get("seconds", 0.0)
        + gan_total
        + sum(s.get("seconds") or 0.0 for s in samples.values())
        + ((audit or {}).get("seconds") or 0.0)
        + classifiers
    )
    return total, untimed


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("y_true", "y_score", "history")}


def _value(metrics: dict, key: str):
    value = metrics[key]
    return value["value"] if isinstance(value, dict) else value


def _summarise(results: list[dict]) -> dict:
    keys = ("sensitivity", "specificity", "accuracy", "balanced_accuracy", "f1", "roc_auc")
    summary = {key: mean_sd([_value(r["test"], key) for r in results]) for key in keys}
    summary["ece"] = mean_sd([r["test"]["calibration"]["ece"] for r in results])
    rows = [r["test"]["robustness"]["rows"] for r in results]
    summary["robustness"] = [
        {
            **{k: row[k] for k in ("degradation", "unit", "strength")},
            "balanced_accuracy": mean_sd([seed[i]["balanced_accuracy"] for seed in rows]),
        }
        for i, row in enumerate(rows[0])
    ]
    return summary


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
