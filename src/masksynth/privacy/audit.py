"""`masksynth audit`: is a synthetic face set safe to release? Every measure, one verdict.

The verdict is the worst privacy measure's: 'fail' when some measure finds copying,
re-identification or membership leakage clearly beyond what unseen real photos show;
'warn' for weaker evidence; 'pass' otherwise. Quality checks are reported beside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from masksynth.config import AuditConfig
from masksynth.device import pick_device
from masksynth.errors import MasksynthError
from masksynth.fileio import write_json
from masksynth.privacy.decide import worst
from masksynth.privacy.measures import PRIVACY, REGISTRY
from masksynth.privacy.sets import load_sets
from masksynth.runinfo import run_record

log = logging.getLogger(__name__)

STATEMENTS = {
    "pass": "SAFE TO RELEASE: no measure found copying, re-identification or membership "
    "leakage beyond what unseen real photos of the same kind show.",
    "warn": "RELEASE WITH CAUTION: some measure shows weak evidence that the synthetic set "
    "is closer to the training photos than unseen photos are; look at the closest pairs "
    "below, or release a privacy-filtered sample (masksynth sample --privacy-filter).",
    "fail": "NOT SAFE TO RELEASE: the synthetic set reproduces training photos or subjects "
    "(see the failed measures); use masksynth sample --privacy-filter, train longer-regularised "
    "or with --dp-epsilon, and audit again.",
}


def run_audit(
    synth_dir: str | Path, prep_dir: str | Path, out_dir: str | Path, config: AuditConfig
) -> dict:
    start = time.perf_counter()
    synth_dir, prep_dir, out_dir = Path(synth_dir), Path(prep_dir), Path(out_dir)
    if not 0 < config.near_copy_quantile < 0.5:
        raise MasksynthError("--near-copy-quantile must be between 0 and 0.5")
    device = pick_device(config.device)
    sets = load_sets(synth_dir, prep_dir, config, device)

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
    result = {
        "stage": "audit",
        "verdict": verdict,
        "statement": STATEMENTS[verdict],
        "quality_verdict": worst(q["verdict"] for q in quality.values()),
        "measures": measures,
        "quality": quality,
        "synthetic": str(synth_dir),
        "train": str(prep_dir),
        "sizes": {
            cs.name: {
                role: {"all": len(cs.images[role]), "inception": len(cs.subset[role])}
                for role in cs.images
            }
            for cs in sets.classes
        },
        "identity_calibration": sets.identity_calibration,
        "gan": sets.gan,
        "config": config.to_dict(),
        **run_record(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    from masksynth.report.audit_report import write_audit_report

    write_audit_report(out_dir, result, sets)
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out_dir / "audit.json", result)
    return result
