"""The `masksynth` command: parse options, call one stage, turn user errors into one line.

Each command imports its stage when it runs (start-up cost: torch and the stages' libraries
take seconds to import, and `masksynth --help` should answer at once). Option defaults are
the config dataclasses' own (a test checks every one), so a default exists once.
Over 400 lines on purpose: one short function per command, mostly its option declarations.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from masksynth import __version__
from masksynth.config import (
    TEST,
    AuditConfig,
    ClassifierConfig,
    Decision,
    ExperimentConfig,
    PrepareConfig,
    ServiceConfig,
    classifier_config,
    experiment_config,
    gan_config,
)
from masksynth.errors import MasksynthError
from masksynth.fileio import write_json

app = typer.Typer(
    help="Mask / no-mask face classifiers and anonymized synthetic faces from a small photo set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("masksynth")
CLASS_KEEP_HELP = (
    "Keep this share of candidate fakes: those D's class head is surest show their class "
    "(default: the run's --class-keep; 1: every fake)."
)
INTERRUPTED = 130  # the shell convention for Ctrl-C


def _version(value: bool) -> None:
    if value:
        typer.echo(f"masksynth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="masksynth: %(message)s", stream=sys.stderr, force=True)


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _int_triple(text: str, option: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise MasksynthError(f"{option} must be three integers 0-255 like 255,255,255")
    return values  # type: ignore[return-value]


@app.command()
def prepare(
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="ImageFolder: one subfolder per class (optionally inside train/ val/ test/)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (PREP_DIR).")],
    positive_class: Annotated[
        str, typer.Option(help="Class counted as positive for sensitivity.")
    ] = PrepareConfig.positive_class,
    size: Annotated[
        list[int] | None,
        typer.Option("--size", metavar="PX", help="Cached square size in px; repeat for several."),
    ] = None,
    split: Annotated[str, typer.Option(help="train,val,test fractions.")] = ",".join(
        map(str, PrepareConfig.split)
    ),
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the split and the contact sheets.")
    ] = PrepareConfig.seed,
    group_by: Annotated[
        str,
        typer.Option(
            help="Regex on file names; files sharing its first group (a person) stay in one "
            r"split, e.g. '^\d+_\d+_([A-Za-z]+)_'. 'auto': detect a person-naming "
            "convention in the names; 'none': no person grouping."
        ),
    ] = PrepareConfig.group_by,
    face_crop: Annotated[
        bool, typer.Option(help="Crop the most confident face (YuNet).")
    ] = PrepareConfig.face_crop,
    face_margin: Annotated[
        float, typer.Option(help="Margin around the face box per side, as a share of its size.")
    ] = PrepareConfig.face_margin,
    face_threshold: Annotated[
        float, typer.Option(help="YuNet detection score threshold.")
    ] = PrepareConfig.face_threshold,
    near_dup_bits: Annotated[
        int, typer.Option(help="pHash bits within which two images are near duplicates.")
    ] = PrepareConfig.near_dup_bits,
    min_side: Annotated[
        int, typer.Option(help="Reject images whose shorter side is smaller (px).")
    ] = PrepareConfig.min_side,
    max_pixels: Annotated[
        int, typer.Option(help="Reject images with more pixels (decompression bombs).")
    ] = PrepareConfig.max_pixels,
    alpha_background: Annotated[
        str, typer.Option(help="RGB that transparent pixels become.")
    ] = ",".join(map(str, PrepareConfig.alpha_background)),
    workers: Annotated[
        int, typer.Option(help="Processes; 0 = one per CPU core.")
    ] = PrepareConfig.workers,
) -> None:
    """Validate, deduplicate, face-crop and split a raw photo folder into a cached data set."""
    from masksynth.data.prepare import prepare as run_prepare  # start-up cost
    from masksynth.data.split import parse_fractions

    config = PrepareConfig(
        positive_class=positive_class,
        sizes=tuple(sorted(set(size or PrepareConfig.sizes))),
        split=parse_fractions(split),
        seed=seed,
        group_by=group_by,
        face_crop=face_crop,
        face_margin=face_margin,
        face_threshold=face_threshold,
        near_dup_bits=near_dup_bits,
        min_side=min_side,
        max_pixels=max_pixels,
        alpha_background=_int_triple(alpha_background, "--alpha-background"),
        workers=workers,
    )
    meta = run_prepare(data_dir, out, config)
    counts = meta["counts"]
    usable = ", ".join(f"{c} {counts['usable'].get(c, 0)}" for c in meta["classes"])
    log.info("usable images: %s; report: %s", usable, out / "report.md")
    problems = sum(n for key, n in counts["status"].items() if not key.endswith("/ok"))
    if problems:
        log.warning(
            "%d file(s) rejected, duplicated or skipped: listed in %s", problems, out / "report.md"
        )


@app.command("train-gan")
def train_gan(
    prep_dir: Annotated[Path, typer.Argument(help="A folder made by 'masksynth prepare'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (RUN_DIR).")],
    preset: Annotated[
        str | None,
        typer.Option(help="paper | best | quick (default paper; with --resume: the run's own)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs (with --resume: the new total); alone, it turns a budget off."),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(help="Training budget in minutes: as many epochs as fit (0: --epochs)."),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            help="dcgan (the paper's) | fastgan (FastGAN-style G; projected D by default)."
        ),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="bce (the paper's) | hinge.")] = None,
    d_input_size: Annotated[
        int | None, typer.Option(help="Projected D: the side its frozen feature network sees.")
    ] = None,
    discriminator: Annotated[
        str | None,
        typer.Option(help="auto (the family's own) | dcgan | projected."),
    ] = None,
    mode: Annotated[str | None, typer.Option(help="per-class | conditional.")] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Seed of weights, noise and data order.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue RUN_DIR from its checkpoint.")] = False,
    batch_size: Annotated[int | None, typer.Option(help="Images per step per G/D pair.")] = None,
    lr_g: Annotated[float | None, typer.Option(help="Adam learning rate of G.")] = None,
    lr_d: Annotated[float | None, typer.Option(help="Adam learning rate of D.")] = None,
    diffaugment: Annotated[
        str | None,
        typer.Option(
            help="DiffAugment policy: color, tone (color without saturation), translation, "
            "cutout, e.g. tone,translation ('' = off)."
        ),
    ] = None,
    xflip: Annotated[
        bool | None, typer.Option("--xflip/--no-xflip", help="Mirror real images at random.")
    ] = None,
    ema_decay: Annotated[float | None, typer.Option(help="EMA of G (0 = off).")] = None,
    ema_ramp: Annotated[
        float | None,
        typer.Option(help="EMA warm-up: decay min(ema-decay, (1+s)/(ramp+s)) after s steps."),
    ] = None,
    class_keep: Annotated[
        float | None,
        typer.Option(
            help="Share of candidate fakes that sample and the quality metrics keep: those D's "
            "class head is surest show their class (needs --ac-weight; 1: every fake)."
        ),
    ] = None,
    d_norm: Annotated[
        str | None, typer.Option(help="D normalisation: batch | spectral | group | layer.")
    ] = None,
    ac_weight: Annotated[
        float | None,
        typer.Option(
            help="Auxiliary classifier on a conditional DCGAN D (AC-GAN): weight of its "
            "class loss (0 = off)."
        ),
    ] = None,
    ac_twin: Annotated[
        bool | None,
        typer.Option(
            "--ac-twin/--no-ac-twin",
            help="A twin class head on D learns the fakes' classes; G's loss subtracts its "
            "cross-entropy (TAC-GAN; needs --ac-weight).",
        ),
    ] = None,
    g_width: Annotated[
        int | None, typer.Option(help="G width (channels of its last layer).")
    ] = None,
    d_width: Annotated[
        int | None, typer.Option(help="D width (channels of its first layer).")
    ] = None,
    g_low_pass: Annotated[
        bool | None,
        typer.Option(
            "--g-low-pass/--no-g-low-pass",
            help="A fixed binomial low-pass filter on G's output, against the transposed "
            "convolutions' checkerboard.",
        ),
    ] = None,
    g_class_norm: Annotated[
        bool | None,
        typer.Option(
            "--g-class-norm/--no-g-class-norm",
            help="Conditional G: class-wise scale and shift in G's BatchNorm layers "
            "(per-class pairs have one class: no effect).",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[str | None, typer.Option(help="auto | fp32 | bf16.")] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic/--no-deterministic", help="Bit-exact reruns and resumes."),
    ] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(help="Stop after this much training time (a checkpoint is kept)."),
    ] = None,
    checkpoint_minutes: Annotated[
        float | None, typer.Option(help="Also checkpoint this often within an epoch.")
    ] = None,
    checkpoint_every_steps: Annotated[
        int | None, typer.Option(help="Also checkpoint every N steps (0 = off).")
    ] = None,
    metrics_every: Annotated[
        int | None,
        typer.Option("--metrics-every", help="FID/KID on the val split every K epochs (0 = off)."),
    ] = None,
    metrics_samples: Annotated[
        int | None, typer.Option(help="Synthetic images per class for FID/KID/PRDC.")
    ] = None,
    final_metrics: Annotated[
        bool | None,
        typer.Option("--final-metrics/--no-final-metrics", help="FID/KID/PRDC on test at the end."),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(help="Differential privacy: target epsilon of the whole run (0 = off)."),
    ] = None,
    dp_delta: Annotated[
        float | None, typer.Option(help="DP delta (0 = 1 / (10 x training images)).")
    ] = None,
    dp_max_grad_norm: Annotated[
        float | None, typer.Option(help="DP: clip each real image's D gradient to this norm.")
    ] = None,
) -> None:
    """Train the paper's DCGAN (or the 'best'/'quick' recipe) on a prepared folder."""
    from masksynth.gan.resume import resume_config  # start-up cost
    from masksynth.stages import train_gan as run

    # with --resume, options left out keep the run's own values; the others must agree
    make = partial(resume_config, out) if resume else gan_config
    config = make(
        preset if resume else (preset or "paper"),
        epochs=epochs,
        # --epochs alone means those epochs, not a preset's budget
        minutes=0.0 if epochs is not None and minutes is None and not resume else minutes,
        family=family,
        loss=loss,
        d_input_size=d_input_size,
        discriminator=discriminator,
        mode=mode,
        seed=seed,
        batch_size=batch_size,
        lr_g=lr_g,
        lr_d=lr_d,
        diffaugment=diffaugment,
        xflip=xflip,
        ema_decay=ema_decay,
        ema_ramp=ema_ramp,
        class_keep=class_keep,
        d_norm=d_norm,
        ac_weight=ac_weight,
        ac_twin=ac_twin,
        g_width=g_width,
        d_width=d_width,
        g_class_norm=g_class_norm,
        g_low_pass=g_low_pass,
        device=device,
        precision=precision,
        deterministic=deterministic,
        max_minutes=max_minutes,
        checkpoint_minutes=checkpoint_minutes,
        checkpoint_every_steps=checkpoint_every_steps,
        metrics_every_epochs=metrics_every,
        metrics_samples=metrics_samples,
        final_metrics=final_metrics,
        dp_epsilon=dp_epsilon,
        dp_delta=dp_delta,
        dp_max_grad_norm=dp_max_grad_norm,
    )
    summary = run(prep_dir, out, config, resume=resume)
    log.info(
        "trained %d epochs (%s) in %.0f s; grids in %s",
        summary["epochs_done"],
        summary["stopped"],
        summary["train_seconds"],
        out / "grids",
    )
    if summary.get("dp"):
        dp = summary["dp"]
        log.info("differential privacy: epsilon %.3f (delta %.2g)", dp["epsilon"], dp["delta"])
    for name, scores in summary.get("metrics", {}).items():
        shown = ("fid", "kid", "precision", "recall")
        log.info("%s: %s", name, ", ".join(f"{k} {scores[k]}" for k in shown))


@app.command()
def sample(
    run_dir: Annotated[Path, typer.Argument(help="A folder made by 'masksynth train-gan'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output ImageFolder (SYNTH_DIR).")],
    n_per_class: Annotated[int, typer.Option(help="Images per class.")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Latent seed: same seed, same images.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    privacy_filter: Annotated[
        bool,
        typer.Option(
            help="Drop images whose face passes for a training subject or that nearly copy a "
            "training photo (the audit's thresholds); draw more until N per class pass."
        ),
    ] = False,
    prep: Annotated[
        Path | None,
        typer.Option(help="The GAN's prepared folder (default: the one named in gan.json)."),
    ] = None,
    matchers: Annotated[
        str, typer.Option(help="Face matchers of the privacy filter: sface, dlib.")
    ] = ",".join(AuditConfig.matchers),
    class_keep: Annotated[float | None, typer.Option(help=CLASS_KEEP_HELP)] = None,
) -> None:
    """Generate synthetic faces as PNGs per class, with a manifest to regenerate any image."""
    from masksynth.stages import sample as run  # start-up cost

    meta = run(
        run_dir,
        out,
        n_per_class,
        seed,
        device,
        privacy_filter,
        prep,
        matchers=_names(matchers),
        class_keep=class_keep,
    )
    log.info("%d images per class in %s", meta["n_per_class"], out)


@app.command()
def audit(
    synth_dir: Annotated[Path, typer.Argument(help="Synthetic ImageFolder (from 'sample').")],
    train: Annotated[
        Path, typer.Option(help="The prepared folder whose train split the GAN learned from.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")],
    holdout: Annotated[
        str,
        typer.Option(
            help="Prepared splits the GAN never saw (the yardstick H), comma-separated; not the "
            "split the sample was privacy-filtered with."
        ),
    ] = ",".join(AuditConfig.holdout),
    matchers: Annotated[
        str, typer.Option(help="Face matchers for re-identification: sface, dlib.")
    ] = ",".join(AuditConfig.matchers),
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of the subsets and bootstraps.")
    ] = AuditConfig.seed,
    inception_per_class: Annotated[
        int, typer.Option(help="Synthetic and held-out images per class in Inception space.")
    ] = AuditConfig.inception_synthetic,
    inception_train: Annotated[
        int, typer.Option(help="Training images per class in Inception space.")
    ] = AuditConfig.inception_train,
    near_copy_quantile: Annotated[
        float, typer.Option(help="Quantile of held-out distances that defines a near copy.")
    ] = AuditConfig.near_copy_quantile,
    identity_far: Annotated[
        float, typer.Option(help="False accept rate of the calibrated identity threshold.")
    ] = AuditConfig.identity_far,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = AuditConfig.device,
    workers: Annotated[
        int, typer.Option(help="Face-embedding processes; 0 = one per CPU core.")
    ] = AuditConfig.workers,
) -> None:
    """Privacy audit of a synthetic set against the GAN's training photos: one verdict."""
    from masksynth.privacy.audit import run_audit  # start-up cost

    config = AuditConfig(
        holdout=_names(holdout),
        matchers=_names(matchers),
        seed=seed,
        inception_synthetic=inception_per_class,
        inception_holdout=inception_per_class,
        inception_train=inception_train,
        near_copy_quantile=near_copy_quantile,
        identity_far=identity_far,
        device=device,
        workers=workers,
    )
    result = run_audit(synth_dir, train, out, config)
    typer.echo(f"{result['verdict'].upper()}: {result['statement']}")
    for reason in result["reasons"]:
        typer.echo(f"  because {reason}")
    for name, m in result["measures"].items():
        typer.echo(
            f"  {name:28s} {m['verdict']:7s} value {m['value']} (threshold {m['threshold']})"
        )
    typer.echo(f"quality: {result['quality_verdict']}; report: {out / 'report.html'}")


@app.command("gan-metrics")
def gan_metrics(
    source: Annotated[
        Path,
        typer.Argument(
            help="Synthetic ImageFolder (from 'sample'), or a 'train-gan' run folder: its "
            "generator's fakes on the evaluation latents."
        ),
    ],
    real: Annotated[Path, typer.Option(help="Prepared folder holding the real images.")],
    split: Annotated[str, typer.Option(help="Real split to compare with.")] = TEST,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON here.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    reference: Annotated[
        str | None,
        typer.Option(help="Also score this real split (e.g. val) against --split: the yardstick."),
    ] = None,
    fakes: Annotated[
        int | None,
        typer.Option(help="A run folder's fakes per class (default: its --metrics-samples)."),
    ] = None,
    class_keep: Annotated[
        float | None, typer.Option(help="A run folder's fakes: " + CLASS_KEEP_HELP)
    ] = None,
) -> None:
    """KID, FID and precision/recall/density/coverage per class, offline Inception features."""
    from masksynth.stages import quality_metrics  # start-up cost

    result = quality_metrics(source, real, split, device, reference, fakes, class_keep)
    if json_out is not None:
        write_json(json_out, result)
    typer.echo(json.dumps(result, indent=2))


@app.command("train-classifier")
def train_classifier(
    prep_dir: Annotated[Path, typer.Argument(help="A folder made by 'masksynth prepare'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")],
    synthetic: Annotated[
        Path | None,
        typer.Option(help="Synthetic ImageFolder to add to the real training images (scenario 2)."),
    ] = None,
    synthetic_only: Annotated[
        bool,
        typer.Option(
            help="Train on the synthetic images alone (train-synthetic / test-real control)."
        ),
    ] = False,
    preset: Annotated[
        str,
        typer.Option(
            help="default (EfficientNet-lite0, ImageNet, 128 px, camera degradations) | paper "
            "(ResNet18 from scratch, 64 px, 30 epochs)."
        ),
    ] = "default",
    arch: Annotated[
        str | None, typer.Option(help="resnet18 | efficientnet_lite0 (default: preset).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="imagenet (local cache only) | none | PATH of a state dict."),
    ] = None,
    size: Annotated[int | None, typer.Option(help="Input size (a prepared cache size).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = ClassifierConfig.batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, one-cycle).")] = (
        ClassifierConfig.lr
    ),
    class_weights: Annotated[
        str, typer.Option(help="none | balanced (inverse class frequency in the loss).")
    ] = ClassifierConfig.class_weights,
    augment: Annotated[
        bool, typer.Option(help="Classic augmentation (paper).")
    ] = ClassifierConfig.augment,
    degrade: Annotated[
        float | None,
        typer.Option(
            help="Probability per image of each camera degradation in training (small "
            "faces, blur, JPEG, noise, lighting, a hand, crop jitter, grey scale); 0 = off."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of weights, order and augmentation.")
    ] = ClassifierConfig.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = ClassifierConfig.device,
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | bf16.")
    ] = ClassifierConfig.precision,
) -> None:
    """Train the mask classifier and select it on the val split."""
    from masksynth.classify.train import train_classifier as run  # start-up cost

    config = classifier_config(
        preset,
        arch=arch,
        weights=weights,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        class_weights=class_weights,
        augment=augment,
        degrade=degrade,
        seed=seed,
        device=device,
        precision=precision,
    )
    summary = run(prep_dir, out, config, synthetic, synthetic_only)
    val = summary["val_metrics"]
    log.info(
        "best epoch %d: val balanced accuracy %.4f; checkpoint %s",
        summary["best_epoch"],
        val["balanced_accuracy"] or float("nan"),
        out / summary["checkpoint"],
    )


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="classifier.pt from train-classifier.")],
    data_dir: Annotated[
        Path,
        typer.Argument(help="A raw ImageFolder of photos, or a prepared folder (see --split)."),
    ],
    split: Annotated[str, typer.Option(help="Split of a prepared folder.")] = TEST,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here.")] = None,
    sheet: Annotated[
        Path | None,
        typer.Option(
            help="Contact sheet of misclassified images (default: beside --json, else "
            "./misclassified.png)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    robustness: Annotated[
        bool,
        typer.Option(
            help="Also measure balanced accuracy under camera degradations (small faces, "
            "JPEG, blur, rotation, crop jitter, grey scale); a plot goes beside the sheet."
        ),
    ] = False,
) -> None:
    """Sensitivity, specificity, accuracy... with Wilson 95 % intervals, calibration (ECE, a
    reliability plot), on real photos."""
    from masksynth.classify.evaluate import evaluate as run  # start-up cost
    from masksynth.render.plots import reliability_diagram, robustness_bars

    if sheet is None:
        sheet = (json_out.parent if json_out else Path(".")) / "misclassified.png"
    metrics, predictions = run(checkpoint, data_dir, split, sheet, device, robustness)
    reliability_diagram({"model": metrics["calibration"]}, sheet.parent / "reliability.png")
    if robustness:
        robustness_bars({"model": metrics["robustness"]}, sheet.parent / "robustness.png")
    if json_out is not None:
        write_json(json_out, metrics)
    typer.echo(json.dumps(metrics, indent=2))
    if predictions.rejected:
        log.warning("%d file(s) could not be used (listed above)", len(predictions.rejected))


@app.command()
def experiment(
    data_dir: Annotated[Path, typer.Argument(help="Raw ImageFolder of real photos.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (RUN).")],
    preset: Annotated[
        str,
        typer.Option(
            help="quick (~14 min on 2 CPU cores with native bf16) | best (the hour's GAN, "
            "classifiers 10 epochs with camera degradations: ~89 min) | paper (the paper's "
            "recipe: a GPU job)."
        ),
    ] = ExperimentConfig.preset,
    seeds: Annotated[int | None, typer.Option(help="Classifier seeds per scenario.")] = None,
    synthetic_per_class: Annotated[
        int | None, typer.Option(help="Synthetic images per class added in scenario 2.")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="resnet18 | efficientnet_lite0.")] = None,
    weights: Annotated[
        str | None, typer.Option(help="imagenet (local cache only) | none | PATH.")
    ] = None,
    classifier_epochs: Annotated[int | None, typer.Option(help="Classifier epochs.")] = None,
    degrade: Annotated[
        float | None,
        typer.Option(help="Probability of each camera degradation in classifier training."),
    ] = None,
    gan_preset: Annotated[
        str | None,
        typer.Option(
            help="The GAN's preset: quick (5 min of training) | best (60 min) | paper "
            "(default: the experiment preset's)."
        ),
    ] = None,
    gan_epochs: Annotated[
        int | None,
        typer.Option(
            help="GAN epochs: exactly these, or the cap of --gan-minutes (default: preset)."
        ),
    ] = None,
    gan_minutes: Annotated[
        float | None,
        typer.Option(
            help="GAN training budget in minutes (default: the preset's: quick 5, best 60).",
        ),
    ] = None,
    gan_metrics_samples: Annotated[
        int | None,
        typer.Option(help="Synthetic images per class for FID/KID/PRDC (default: preset)."),
    ] = None,
    gan_seed: Annotated[
        int | None,
        typer.Option(min=0, help="The GAN's seed (default 0); --seeds are the classifiers'."),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            help="Regex whose first group keeps one person in one split; 'auto' (default) "
            "detects a person key in the file names; 'none'."
        ),
    ] = None,
    control: Annotated[
        bool | None,
        typer.Option("--control/--no-control", help="Also train on synthetic only, test on real."),
    ] = None,
    control_seeds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Seeds of the synthetic-only control, the first of --seeds (default: preset).",
        ),
    ] = None,
    tstr_steps: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Least training steps of the synthetic-only control (TSTR; default: preset).",
        ),
    ] = None,
    tstr_per_class: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Synthetic faces per class of the synthetic-only control, sampled for it "
            "alone (default: scenario 2's set).",
        ),
    ] = None,
    privacy_filter: Annotated[
        bool | None,
        typer.Option(
            "--privacy-filter/--no-privacy-filter",
            help="Scenario 2 uses the privacy-filtered sample (default: on).",
        ),
    ] = None,
    audit: Annotated[
        bool | None,
        typer.Option(
            "--audit/--no-audit", help="Privacy audit of the synthetic set (default: on)."
        ),
    ] = None,
    matchers: Annotated[
        str | None,
        typer.Option(
            help="Face matchers of the privacy filter and audit: sface, dlib (default: preset)."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
) -> None:
    """The paper's experiment end to end: real vs real+synthetic, several seeds, one report."""
    from masksynth.experiment import run_experiment  # start-up cost

    config = experiment_config(
        preset,
        seeds=seeds,
        synthetic_per_class=synthetic_per_class,
        arch=arch,
        weights=weights,
        classifier_epochs=classifier_epochs,
        degrade=degrade,
        gan_preset=gan_preset,
        gan_epochs=gan_epochs,
        gan_minutes=gan_minutes,
        gan_metrics_samples=gan_metrics_samples,
        gan_seed=gan_seed,
        group_by=group_by,
        control=control,
        control_seeds=control_seeds,
        tstr_steps=tstr_steps,
        tstr_per_class=tstr_per_class,
        privacy_filter=privacy_filter,
        audit=audit,
        matchers=None if matchers is None else _names(matchers),
        device=device,
    )
    results = run_experiment(data_dir, out, config)
    summary = results["summary"]
    for name in summary:
        acc = summary[name]["accuracy"]
        log.info("%s: accuracy %.4f ± %.4f", name, acc["mean"], acc["sd"])
    if results.get("audit"):
        log.info("privacy audit: %s", results["audit"]["statement"])
    log.info("report: %s (and report.html, results.json)", out / "report.md")


# options shared by predict, serve and watch
DeployedModel = Annotated[
    Path, typer.Argument(help="classifier.pt from 'train-classifier', or its .onnx export.")
]
ThresholdOption = Annotated[
    float, typer.Option(help="P(positive class) at or above this: the positive label.")
]
UncertainBandOption = Annotated[
    float, typer.Option(help="Flag 'uncertain' within this distance of the threshold.")
]


@app.command()
def predict(
    checkpoint: DeployedModel,
    inputs: Annotated[
        list[str],
        typer.Argument(help="Photos, folders (recursive), videos, or a camera index (0)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for predictions.jsonl|csv (default: stdout)."),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="jsonl | csv.")] = "jsonl",
    annotate: Annotated[
        bool, typer.Option(help="Also write copies with boxes and labels to OUT/annotated/.")
    ] = False,
    threshold: ThresholdOption = Decision.threshold,
    uncertain_band: UncertainBandOption = Decision.uncertain_band,
    every: Annotated[int, typer.Option(help="Video and camera: every N-th frame.")] = 1,
    max_frames: Annotated[
        int, typer.Option(help="Video and camera: at most this many frames each (0: all).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    backend: Annotated[
        str, typer.Option(help="torch | onnxruntime (a .onnx model always uses onnxruntime).")
    ] = "torch",
) -> None:
    """Classify every face in photos, videos or a camera: one record per face."""
    from masksynth.deploy.predict import predict as run  # start-up cost
    from masksynth.deploy.predictor import FacePredictor

    predictor = FacePredictor(checkpoint, device, Decision(threshold, uncertain_band), backend)
    summary = run(predictor, inputs, out, output_format, annotate, every, max_frames)
    log.info(
        "%d frame(s), %d face(s) %s (%d uncertain), %d without a face, %d unreadable; "
        "%.1f frames/s%s",
        summary["frames"],
        summary["faces"],
        summary["labels"],
        summary["uncertain"],
        summary["no_face"],
        summary["errors"],
        summary["frames_per_s"] or 0.0,
        f"; {out}" if out else "",
    )
    if summary["interrupted"]:
        raise typer.Exit(INTERRUPTED)


@app.command()
def serve(
    checkpoint: DeployedModel,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    threshold: ThresholdOption = ServiceConfig.threshold,
    uncertain_band: UncertainBandOption = ServiceConfig.uncertain_band,
    backend: Annotated[str, typer.Option(help="torch | onnxruntime.")] = ServiceConfig.backend,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = ServiceConfig.device,
    workers: Annotated[
        int, typer.Option(help="Model copies answering at once.")
    ] = ServiceConfig.workers,
    max_concurrency: Annotated[
        int, typer.Option(help="Predictions in flight; more are answered 503 at once.")
    ] = ServiceConfig.max_concurrency,
    max_body_mb: Annotated[
        float, typer.Option(help="Largest upload in MiB; larger ones get 413.")
    ] = ServiceConfig.max_body_bytes / 2**20,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's head.")
    ] = ServiceConfig.header_timeout_s,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a body; then 408.")
    ] = ServiceConfig.body_timeout_s,
) -> None:
    """HTTP service and web page: POST /predict, /health, /ready, /metrics, /version, and /."""
    from masksynth.deploy.service import serve as run  # start-up cost

    config = ServiceConfig(
        threshold,
        uncertain_band,
        backend,
        device,
        workers,
        max_concurrency,
        int(max_body_mb * 2**20),
        header_timeout,
        body_timeout,
    )
    run(checkpoint, host, port, config)


@app.command()
def watch(
    checkpoint: DeployedModel,
    inbox: Annotated[Path, typer.Argument(help="The folder a camera or FTP server drops into.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="results.sqlite, results.csv, processed/ and failed/ go here."
        ),
    ],
    settle: Annotated[
        float, typer.Option(help="Seconds a file must keep its size and time to count as complete.")
    ] = 2.0,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the inbox.")] = 1.0,
    once: Annotated[
        bool, typer.Option(help="Stop when the inbox holds nothing more (default: watch on).")
    ] = False,
    every: Annotated[int, typer.Option(help="Videos: every N-th frame.")] = 1,
    threshold: ThresholdOption = Decision.threshold,
    uncertain_band: UncertainBandOption = Decision.uncertain_band,
    backend: Annotated[str, typer.Option(help="torch | onnxruntime.")] = "torch",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Classify each file dropped into INBOX once, record it in SQLite, move it away."""
    from masksynth.deploy.predictor import FacePredictor  # start-up cost
    from masksynth.deploy.watch import Watcher

    predictor = FacePredictor(checkpoint, device, Decision(threshold, uncertain_band), backend)
    watcher = Watcher(predictor, inbox, out, settle, every)
    log.info("watching %s (results in %s; Ctrl-C stops)", inbox, out)
    summary = watcher.run(poll, once)
    log.info("%d file(s) processed", summary["processed"])
    if summary["interrupted"]:
        raise typer.Exit(INTERRUPTED)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="classifier.pt from 'train-classifier'.")],
    onnx: Annotated[Path, typer.Option("--onnx", help="The ONNX file to write.")],
) -> None:
    """Export a classifier to ONNX: pixels in, calibrated probabilities out, metadata inside."""
    from masksynth.deploy.backends import export_onnx  # start-up cost

    meta = export_onnx(checkpoint, onnx)
    log.info("%s: %s, %d px, classes %s", onnx, meta["arch"], meta["size"], meta["class_names"])


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    from masksynth.distributed import teardown  # start-up cost: it imports torch

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="masksynth", standalone_mode=False)
    except MasksynthError as error:
        print(f"masksynth: error: {error}", file=sys.stderr)
        return 2
    except TyperException as error:  # bad option or argument: click-style usage errors
        ctx = getattr(error, "ctx", None)
        command_name = ctx.command_path if ctx is not None else "masksynth"
        print(
            f"masksynth: error: {error.format_message()} (see '{command_name} --help')",
            file=sys.stderr,
        )
        return 2
    except (KeyboardInterrupt, typer.Abort):
        result = INTERRUPTED
    finally:
        teardown()  # leave torchrun's process group cleanly
    if result == INTERRUPTED:  # typer turns Ctrl-C into this exit code, silently
        print("masksynth: interrupted; run the same command again to resume", file=sys.stderr)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
