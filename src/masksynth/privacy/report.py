"""report.md and a self-contained report.html for `masksynth audit`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from masksynth.data.identity import most_similar
from masksynth.fileio import write_text
from masksynth.privacy.distances import nearest
from masksynth.render import plots
from masksynth.render.document import Document
from masksynth.render.sheets import save_grid

PAIRS = 16


def write_audit_report(out_dir: Path, result: dict, sets) -> None:
    figures = out_dir / "figures"
    doc = Document("masksynth privacy audit", out_dir)
    style = "verdict" if result["verdict"] == "pass" else "note"
    doc.paragraph(f"**Verdict: {result['verdict'].upper()}.** {result['statement']}", style)
    if result["quality_verdict"] == "poor":
        doc.paragraph(
            "Quality: **POOR** (see the quality checks): many synthetic images are not "
            "realistic faces, which is one reason they copy nobody. Audit again after "
            "improving the GAN: better faces can be closer to the people they learned from.",
            "note",
        )
    for reason in result.get("reasons", []):
        doc.paragraph(f"Why not a clean pass: {reason}.", "note")
    splits = result["splits"]
    doc.paragraph(
        f"Synthetic set `{result['synthetic']}` (S) against the GAN's training images T (the "
        f"train split) and held-out images H (the {', '.join(splits['holdout'])} split, never "
        f"shown to the GAN) of `{result['train']}`. Every measure asks whether S is closer to "
        "T than H is; H is the yardstick of 'unseen real photos'. "
        + (
            f"The sample was privacy-filtered with thresholds calibrated on the "
            f"{', '.join(splits['filter_calibrated_on'])} split, so this audit does not grade "
            "its own filter."
            if splits.get("filter_calibrated_on")
            else "The sample was not privacy-filtered."
        )
    )
    if result.get("guarantee"):
        doc.paragraph(f"Differential privacy (DP-SGD on the discriminator): {result['guarantee']}.")
    elif result.get("gan"):
        doc.paragraph("The GAN was trained without differential privacy (no formal guarantee).")

    doc.heading("Privacy measures")
    doc.table(*_rows(result["measures"]), caption="worst class first decides each verdict")
    identity = result["measures"].get("identity_reidentification")
    if identity:
        rows = [
            [
                cls,
                name,
                m.get("value"),
                m.get("baseline"),
                m["same_person_threshold"],
                f"{m['faceless_share']:.0%}",
                "unknown" if m["power"] is None else f"{m['power']:.0%}",
                m["verdict"] + (f" ({m['reason']})" if m.get("reason") else ""),
            ]
            for cls, r in identity["classes"].items()
            for name, m in r["matchers"].items()
        ]
        doc.table(
            [
                "class",
                "matcher",
                "S rate",
                "H rate",
                "threshold",
                "no face in S",
                "power",
                "verdict",
            ],
            rows,
            caption="re-identification per face matcher (S rate counts faces found; images "
            "with no face are not counted as passing); power = share of real same-person "
            "pairs the threshold recognises",
        )
    doc.heading("Quality checks (do not decide the verdict)")
    doc.table(*_rows(result["quality"]))
    doc.heading("What each measure asks, and its rule")
    for name, m in {**result["measures"], **result["quality"]}.items():
        doc.paragraph(f"**{name}** ({m['space']}): {m['question']} Rule: {m['rule']}.")

    doc.heading("Settings")
    for name, cal in result["identity_calibration"].items():
        if cal["source"] == "calibrated":
            doc.paragraph(
                f"Same-person threshold of `{name}`: **{cal['threshold']}**, calibrated on "
                f"{cal['people']} people (splits {', '.join(cal['splits'])}): "
                f"{cal['false_accept_rate']:.1%} of {cal['different_person_pairs']} "
                f"different-person pairs pass it. Power: **{cal['power']:.0%}** of "
                f"{cal['same_person_pairs']} same-person pairs pass it"
                + (", so a copied person can slip through" if cal["power"] < 0.5 else "")
                + "."
            )
        else:
            doc.paragraph(
                f"Same-person threshold of `{name}`: **{cal['threshold']}** ({cal['note']})."
            )
    head = ["class", "S", "T", "H", "S (Inception)", "T (Inception)", "H (Inception)"]
    rows = []
    for name, roles in result["sizes"].items():
        rows.append(
            [name]
            + [roles[r]["all"] for r in ("synthetic", "train", "holdout")]
            + [roles[r]["inception"] for r in ("synthetic", "train", "holdout")]
        )
    doc.table(head, rows, caption="images compared (Inception measures use seeded subsets)")

    doc.heading("Figures")
    doc.image(_distance_figure(sets, figures / "distances.png"), "distances to T: S vs H")
    doc.image(_roc_figure(sets, figures / "membership_roc.png"), "membership inference ROC")
    for cs in sets.classes:
        path = _closest_pairs(cs, figures / f"closest_pairs_{cs.name}.png")
        doc.image(
            path,
            f"{cs.name}: the {PAIRS} synthetic images closest to a training image (pixel "
            "distance), each followed by that training image",
        )
    write_text(out_dir / "report.md", doc.markdown())
    write_text(out_dir / "report.html", doc.html())


def _rows(measures: dict) -> tuple[list, list]:
    head = ["measure", "class", "value", "H baseline", "threshold", "verdict"]
    rows = []
    for name, m in measures.items():
        for cls, r in m["classes"].items():
            value = r.get("value")
            if "ci95" in r and value is not None:
                value = f"{value:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
            verdict = r["verdict"] + (f" ({r['reason']})" if r.get("reason") else "")
            rows.append([name, cls, value, r.get("baseline"), r.get("threshold"), verdict])
    return head, rows


def _distance_figure(sets, path: Path) -> Path:
    panels = []
    for cs in sets.classes:
        px = cs.features["pixel"]
        panels.append(
            {
                "title": f"{cs.name}: pixel distance to nearest T",
                "series": {
                    "synthetic": nearest(px["synthetic"], px["train"])[0],
                    "held-out": nearest(px["holdout"], px["train"])[0],
                },
                "xlabel": "distance of standardised 64 px images",
            }
        )
        for name, space in sets.identity.items():
            ids = cs.features[space.space]
            panels.append(
                {
                    "title": f"{cs.name}: {space.matcher.label} similarity to nearest T",
                    "series": {
                        "synthetic": most_similar(name, ids["synthetic"], ids["train"])[0],
                        "held-out": most_similar(name, ids["holdout"], ids["train"])[0],
                    },
                    "line": space.threshold,
                    "xlabel": space.matcher.similarity,
                }
            )
    return plots.histograms(panels, path)


def _roc_figure(sets, path: Path) -> Path:
    curves = {}
    for cs in sets.classes:
        px = cs.features["pixel"]
        d_t = nearest(px["train"], px["synthetic"])[0]
        d_h = nearest(px["holdout"], px["synthetic"])[0]
        y = np.r_[np.ones(len(d_t)), np.zeros(len(d_h))]
        curves[f"{cs.name} black-box"] = [(y, -np.r_[d_t, d_h])]
        if sets.membership is not None:
            members, others = sets.membership(cs.images["train"], cs.images["holdout"], cs.index)
            curves[f"{cs.name} white-box (D)"] = [(y, np.r_[members, others])]
    return plots.roc_curves(
        curves, path, title="membership inference: T (members) vs H", xlabel="FPR", ylabel="TPR"
    )


def _closest_pairs(cs, path: Path) -> Path:
    px = cs.features["pixel"]
    d, index = nearest(px["synthetic"], px["train"])
    order = np.argsort(d)[:PAIRS]
    pairs = []
    for i in order:
        pairs += [cs.images["synthetic"][i], cs.images["train"][index[i]]]
    return save_grid(torch.stack(pairs), path, columns=8)
