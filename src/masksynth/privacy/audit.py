"""`masksynth audit`: is a synthetic face set safe to release? Every measure, one verdict.

The verdict is the worst privacy measure's: 'fail' when some measure finds copying,
re-identification or membership leakage clearly beyond what unseen real photos show;
'warn' for weaker evidence, or when the audit cannot judge well (no person keys to
calibrate identity, too few detectable faces); 'pass' otherwise. Quality checks are
reported beside it. The audit judges on the test split; a filtered sample was chosen with
the val split, so the audit does not grade its own filter.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from masksynth.config import AuditConfig
from masksynth.data.cache import read_prepared
from masksynth.data.synthetic import synthetic_id
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.fileio import write_json
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.privacy.decide import ORDER, worst
from masksynth.privacy.measures import PRIVACY, REGISTRY
from masksynth.privacy.report import write_audit_report
from masksynth.privacy.sets import AuditSets, gan_behind, load_sets
from masksynth.runinfo import run_record

log = logging.getLogger(__name__)

STATEMENTS = {
    "pass": "SAFE TO RELEASE: no measure found copying, re-identification or membership "
    "leakage beyond what unseen real photos of the same kind show.",
    "warn": "RELEASE WITH CAUTION: some measure shows weak evidence that the synthetic set "
    "is closer to the training photos than unseen photos are, or the audit cannot judge it "
    "fully (see the reasons); look at the closest pairs below, or release a privacy-filtered "
    "sample (masksynth sample --privacy-filter).",
    "fail": "NOT SAFE TO RELEASE: the synthetic set reproduces training photos or subjects "
    "(see the failed measures); use masksynth sample --privacy-filter, train longer-regularised "
    "or with --dp-epsilon, and audit again.",
}


def audit_inputs(synth_dir: Path, prep_dir: Path, config: AuditConfig) -> dict:
    """What an audit is built from (see provenance): the sample, the data and the settings."""
    gan = gan_behind(synth_dir)
    checkpoint = checkpoint_path(Path(gan["run_dir"])) if gan.get("run_dir") else None
    return {
        "sample": synthetic_id(synth_dir),
        # how it was chosen (the same images, filtered or not, read differently)
        "filter": [gan.get("filtered"), gan.get("filter_holdout")],
        # the white-box attack needs the GAN: an audit without it is not one with it
        "gan_checkpoint": gan.get("checkpoint_sha256")
        if checkpoint is not None and checkpoint.is_file()
        else None,
        "prepared": read_prepared(prep_dir)["fingerprint"],
        "settings": config.settings(),
    }


def run_audit(
    synth_dir: str | Path, prep_dir: str | Path, out_dir: str | Path, config: AuditConfig
) -> dict:
    start = time.perf_counter()
    synth_dir, prep_dir, out_dir = Path(synth_dir), Path(prep_dir), Path(out_dir)
    _check(synth_dir, prep_dir, config)
    inputs = audit_inputs(synth_dir, prep_dir, config)
    device = pick_device(config.device)
    sets = load_sets(synth_dir, prep_dir, config, device)
    result = {
        "stage": "audit",
        **judge(sets, config),
        "inputs": inputs,
        "synthetic": str(synth_dir),
        "train": str(prep_dir),
        "splits": {
            "train": "train (T: the GAN's training images)",
            "holdout": list(config.holdout),
            "filter_calibrated_on": sets.gan.get("filter_holdout"),
        },
        "sizes": {
            cs.name: {
                role: {"all": len(cs.images[role]), "inception": len(cs.subset[role])}
                for role in cs.images
            }
            for cs in sets.classes
        },
        "identity_calibration": {n: s.calibration for n, s in sets.identity.items()},
        "gan": sets.gan,
        "guarantee": guarantee(sets.gan),
        "config": config.to_dict(),
        **run_record(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_audit_report(out_dir, result, sets)
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "audit.json", result)
    return result


def _check(synth_dir: Path, prep_dir: Path, config: AuditConfig) -> None:
    if not 0 < config.near_copy_quantile < 0.5:
        raise MasksynthError("--near-copy-quantile must be between 0 and 0.5")
    if not config.holdout or not config.matchers:
        raise MasksynthError("the audit needs at least one --holdout split and one matcher")
    gan = gan_behind(synth_dir)
    if gan.get("prep_fingerprint"):
        now = read_prepared(prep_dir)["fingerprint"]
        if gan["prep_fingerprint"] != now:
            raise MasksynthError(
                f"{synth_dir} comes from a GAN trained on prepared data "
                f"{gan['prep_fingerprint']}, but {prep_dir} is {now}: audit it against the "
                "prepared folder the GAN learned from"
            )
    shared = sorted(set(gan.get("filter_holdout") or ()) & set(config.holdout))
    if shared:
        raise MasksynthError(
            f"{synth_dir} was privacy-filtered with the {', '.join(shared)} split: the audit "
            "must judge on other held-out splits (e.g. --holdout test), or it grades its own "
            "filter"
        )


def judge(sets: AuditSets, config: AuditConfig) -> dict:
    """Every measure on every class, the verdict and the reasons that bound it."""
    measures: dict[str, dict] = {}
    quality: dict[str, dict] = {}
    for name, m in REGISTRY.items():
        per_class = {cs.name: m.run(cs, sets, config) for cs in sets.classes}
        verdict = worst(r["verdict"] for r in per_class.values())
        headline = next(r for r in per_class.values() if r["verdict"] == verdict)
        entry = {
            "value": headline.get("value"),
            "threshold": headline.get("threshold"),
            "verdict": verdict,
            "space": m.space,
            "question": m.question,
            "rule": m.rule,
            "classes": per_class,
        }
        (measures if m.kind == PRIVACY else quality)[name] = entry
        log.info("%s: %s", name, verdict)

    verdict = worst(m["verdict"] for m in measures.values() if m["verdict"] != "skipped")
    # every warn or fail explains itself: the measure's own reason, or its figures against H's
    reasons = [
        f"{name} ({class_name}): {r.get('reason') or _evidence(r)}"
        for name, m in measures.items()
        for class_name, r in m["classes"].items()
        if r["verdict"] in ("warn", "fail")
    ]
    uncalibrated = [
        s.matcher.label for s in sets.identity.values() if s.calibration["power"] is None
    ]
    if uncalibrated:
        # without person keys, H may show T's people and nobody knows the matchers' power
        reasons.append(
            f"no person keys (prepare --group-by): the identity thresholds of "
            f"{', '.join(uncalibrated)} are published ones of unknown power on these faces, "
            "and held-out photos may show training subjects, a lenient yardstick"
        )
        if ORDER[verdict] < ORDER["warn"]:
            verdict = "warn"
    return {
        "verdict": verdict,
        "statement": STATEMENTS[verdict],
        "reasons": reasons,
        "quality_verdict": worst(q["verdict"] for q in quality.values()),
        "measures": measures,
        "quality": quality,
    }


def _evidence(result: dict) -> str:
    """A warn's or fail's figures in words: the value against unseen photos' and the
    threshold at which it fails."""
    interval = result.get("ci95")
    spread = f" (95 % interval {interval[0]}-{interval[1]})" if interval else ""
    p = f", p = {result['p_value']:.2g}" if result.get("p_value") is not None else ""
    return (
        f"{result['value']}{spread} against {result.get('baseline')} for unseen real photos"
        f"{p}, more than chance explains (it fails at {result.get('threshold')})"
    )


def guarantee(gan: dict) -> str | None:
    """What a differential-privacy guarantee covers here, in one sentence (None: no DP)."""
    dp = gan.get("dp")
    if not dp:
        return None
    covered = (
        f"epsilon = {dp['epsilon']:.2f} at delta = {dp['delta']:.2g} covers the generator and "
        "any sample drawn from it without looking at the training data"
    )
    if gan.get("filtered"):
        return (
            covered + ". It does NOT cover this released set: the privacy filter chose its "
            "images by comparing them with the training photos, so which images were kept "
            "depends on the training data beyond the guarantee"
        )
    return covered + ", this unfiltered set included"
