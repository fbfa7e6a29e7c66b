"""report.md and contact sheets for a prepared folder: every quirk of the input, by name.

Over 400 lines on purpose: one short section function per kind of quirk, in the order the
report shows them; split up, one report would be scattered over several files.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path, PurePath

import numpy as np

from masksynth.data.decode import TINY_SIDE
from masksynth.fileio import write_text
from masksynth.render.sheets import save_grid

SHEET_COLUMNS = 8
SHEET_SAMPLES = 64
FLAG_MEANINGS = {
    "no_face": "no face found: the centre square of the whole image was kept",
    "ext_mismatch": "the file extension does not match the format found in the content",
    "alpha_flattened": "transparent pixels composited on the alpha background",
    "palette": "palette (mode P) image converted to RGB",
    "grayscale": "grey-level image converted to RGB",
    "cmyk": "CMYK image converted to RGB",
    "high_bit_depth": "16-bit or float image scaled to 8 bits",
    "icc_converted": "embedded colour profile converted to sRGB",
    "exif_rotated": "EXIF orientation applied",
    "animated": "several frames: the first was used",
    "tiny": f"shorter side under {TINY_SIDE} px",
    "low_res": "the crop was smaller than the smallest cached size (upscaled)",
    "near_dup_other_class": "a near copy exists in another class: check the labels",
    "leak_across_preset_splits": "the same bytes appear in another of the given splits",
}


def write_prepare_report(
    out_dir: Path,
    rows: list[dict],
    images: dict[str, dict],
    meta: dict,
    exact_groups: list[list[int]],
    near_groups: list[list[int]],
    cross_class_near: list[tuple[str, str, int]],
) -> None:
    classes = meta["classes"]
    config = meta["config"]
    sheets = _write_sheets(out_dir, rows, images, classes, config["sizes"], config["seed"])
    ok = [row for row in rows if row["status"] == "ok"]
    md: list[str] = []
    add = md.append
    add("# Prepare report\n")
    add(
        f"- data: `{meta['data_dir']}`  \n- command: `{meta['command']}`  \n"
        f"- started {meta['started_utc']}, took {meta['seconds']} s  \n"
        f"- positive class: **{meta['positive_class']}**; class indices: "
        + ", ".join(f"{k} = {c}" for k, c in enumerate(classes))
        + "\n"
    )
    add(_summary(rows, classes, meta))

    add("## Rejected files\n")
    rejected = [row for row in rows if row["status"] == "rejected"]
    add(
        _table(["file", "reason"], [[f"`{r['source']}`", r["reason"]] for r in rejected])
        if rejected
        else "None.\n"
    )
    skipped = [row for row in rows if row["status"] == "skipped"]
    add("## Skipped (hidden files and non-files)\n")
    add(
        _table(["file", "reason"], [[f"`{r['source']}`", r["reason"]] for r in skipped])
        if skipped
        else "None.\n"
    )

    add(_formats(rows, classes))
    add(_modes(rows, classes, config))
    add(_small(rows, classes, config))
    add(_duplicates(rows, exact_groups, near_groups, cross_class_near, config))
    add(_grouping(rows, classes, meta))
    add(_faces(ok, classes, config, sheets))

    flags = Counter(flag for row in rows for flag in row.get("flags", []))
    add("## Flags in manifest.csv\n")
    add(
        _table(
            ["flag", "files", "meaning"],
            [[f"`{f}`", flags[f], FLAG_MEANINGS.get(f, "")] for f in sorted(flags)],
        )
    )
    write_text(out_dir / "report.md", "\n".join(md))


def _summary(rows, classes, meta) -> str:
    status = Counter((row["label"], row["status"]) for row in rows)
    faces = meta["counts"]["face_detected"]
    splits = meta["counts"]["splits"]
    table = []
    for c in classes:
        usable = status[c, "ok"]
        table.append(
            [
                c,
                sum(v for (k, _), v in status.items() if k == c),
                usable,
                status[c, "rejected"],
                status[c, "duplicate"],
                status[c, "label_conflict"],
                status[c, "skipped"],
                _rate(faces.get(c, 0), usable),
                *(splits[s].get(c, 0) for s in ("train", "val", "test")),
            ]
        )
    head = [
        "class",
        "files",
        "usable",
        "rejected",
        "exact dup.",
        "label conflict",
        "skipped",
        "face found",
        "train",
        "val",
        "test",
    ]
    return "## Summary\n\n" + _table(head, table)


def _formats(rows, classes) -> str:
    decoded = [row for row in rows if row.get("format")]
    counts = Counter(
        (row["label"], row["format"], PurePath(row["source"]).suffix or "(none)") for row in decoded
    )
    out = [
        "## Formats (detected from the content)\n",
        _table(
            ["class", "format", "extension", "files"],
            [[c, f, f"`{e}`", n] for (c, f, e), n in sorted(counts.items())],
        ),
    ]
    mismatch = [row for row in decoded if "ext_mismatch" in row.get("flags", [])]
    out.append(
        "**Extension does not match the content** "
        f"({len(mismatch)}; decoded by content, as always):\n"
    )
    out.append(
        _table(["file", "content"], [[f"`{r['source']}`", r["format"]] for r in mismatch])
        if mismatch
        else "None.\n"
    )
    uncommon = [row for row in decoded if row["format"] not in ("JPEG", "PNG")]
    out.append(f"**Formats other than JPEG and PNG** ({len(uncommon)}):\n")
    out.append(
        _table(
            ["file", "content", "extension"],
            [
                [f"`{r['source']}`", r["format"], f"`{PurePath(r['source']).suffix}`"]
                for r in uncommon
            ],
        )
        if uncommon
        else "None.\n"
    )
    by_class = {c: Counter(r["format"] for r in decoded if r["label"] == c) for c in classes}
    if len({frozenset(v) for v in by_class.values()}) > 1:
        out.append(
            "> Formats differ between classes: a model could learn the format (or its "
            "compression artefacts) instead of the face. All images are re-encoded "
            "identically in the cache.\n"
        )
    return "\n".join(out)


def _modes(rows, classes, config) -> str:
    decoded = [row for row in rows if row.get("mode")]
    counts = Counter((row["label"], row["mode"]) for row in decoded)
    out = [
        "## Colour modes (as stored)\n",
        _table(["class", "mode", "files"], [[c, m, n] for (c, m), n in sorted(counts.items())]),
        f"Converted to RGB; transparent pixels composited on RGB "
        f"{tuple(config['alpha_background'])}.\n",
    ]
    odd = [row for row in decoded if row["mode"] not in ("RGB", "RGBA")]
    out.append(f"**Palette, grey, CMYK and high-bit-depth images** ({len(odd)}):\n")
    out.append(
        _table(
            ["file", "mode", "format"], [[f"`{r['source']}`", r["mode"], r["format"]] for r in odd]
        )
        if odd
        else "None.\n"
    )
    alpha = [
        row
        for row in decoded
        if row["mode"] in ("RGBA", "LA", "PA") or "alpha_flattened" in row.get("flags", [])
    ]
    out.append(
        _details(
            f"Images with an alpha channel ({len(alpha)})",
            [f"`{r['source']}` ({r['mode']})" for r in alpha],
        )
    )
    return "\n".join(out)


def _small(rows, classes, config) -> str:
    min_side = config["min_side"]
    too_small = [row for row in rows if row["reason"].startswith("too small")]
    tiny = [row for row in rows if "tiny" in row.get("flags", [])]
    smallest = min(config["sizes"])
    under = Counter(
        row["label"]
        for row in rows
        if row.get("width") and min(row["width"], row["height"]) < smallest
    )
    low_res = Counter(row["label"] for row in rows if "low_res" in row.get("flags", []))
    out = [
        f"## Small images\n\nImages with a shorter side under **{min_side} px** are "
        f"rejected (`--min-side`): {len(too_small)} file(s).\n"
    ]
    if too_small:
        out.append(
            _table(["file", "reason"], [[f"`{r['source']}`", r["reason"]] for r in too_small])
        )
    out.append(f"Kept but tiny (shorter side under {TINY_SIDE} px): {len(tiny)} file(s).\n")
    if tiny:
        out.append(
            _table(
                ["file", "size"],
                [[f"`{r['source']}`", f"{r['width']}x{r['height']}"] for r in tiny],
            )
        )
    out.append(
        _table(
            ["class", f"shorter side < {smallest} px", f"crop < {smallest} px (upscaled)"],
            [[c, under[c], low_res[c]] for c in classes],
        )
    )
    return "\n".join(out)


def _duplicates(rows, exact_groups, near_groups, cross_class_near, config) -> str:
    out = [
        f"## Duplicates\n\n**Exact duplicates** (same sha256): {len(exact_groups)} group(s). "
        "The first copy is kept; with different labels every copy is left out.\n"
    ]
    if exact_groups:
        out.append(
            _table(
                ["kept / labels", "copies"],
                [
                    [
                        f"`{rows[g[0]]['source']}`"
                        if rows[g[0]]["status"] == "ok"
                        else "label conflict: none kept",
                        ", ".join(f"`{rows[i]['source']}`" for i in g),
                    ]
                    for g in exact_groups
                ],
            )
        )
    conflicts = [row for row in rows if row["status"] == "label_conflict"]
    out.append(
        f"**Label conflicts** (same image in two classes, left out of every split): "
        f"{len(conflicts)} file(s).\n"
    )
    if conflicts:
        out.append(
            _table(
                ["file", "class", "reason"],
                [[f"`{r['source']}`", r["label"], r["reason"]] for r in conflicts],
            )
        )
    files = sum(len(g) for g in near_groups)
    out.append(
        f"**Near duplicates** (pHash within {config['near_dup_bits']} bits, "
        f"`--near-dup-bits`): {len(near_groups)} group(s) holding {files} files. "
        "Each group stays within one split.\n"
    )
    out.append(
        _details(
            "Near-duplicate groups",
            [
                f"group {rows[g[0]]['near_dup_group']}: "
                + ", ".join(f"`{rows[i]['source']}`" for i in g)
                for g in near_groups
            ],
        )
    )
    if cross_class_near:
        out.append(
            f"**Near copies across classes** ({len(cross_class_near)} pair(s)): "
            "look at these, they may be mislabelled.\n"
        )
        out.append(
            _table(
                ["file", "file", "bits"], [[f"`{a}`", f"`{b}`", d] for a, b, d in cross_class_near]
            )
        )
    return "\n".join(out)


def _grouping(rows, classes, meta) -> str:
    ok = [row for row in rows if row["status"] == "ok"]
    members = defaultdict(list)
    for row in ok:
        members[row["group"]].append(row)
    sizes = sorted((len(m) for m in members.values()), reverse=True)
    crossing = [g for g, m in members.items() if len({r["split"] for r in m}) > 1]
    keys = Counter(row["group_key"] for row in ok if row.get("group_key"))
    grouping = meta.get("group_by") or {"source": "none", "pattern": None}
    pattern = grouping["pattern"]
    out = [
        "## Groups and split\n",
        f"{len(members)} groups (near duplicates"
        + (f" and files sharing the first group of `{pattern}`" if pattern else "")
        + f"); largest: {sizes[:5]}. "
        + (
            f"Person key ({grouping['source']}): `{pattern}` matched {sum(keys.values())} "
            f"files in {len(keys)} groups. "
            if pattern
            else f"No person key ({grouping['source']}): photos of one person may fall in "
            "different splits; pass e.g. `--group-by '^\\d+_\\d+_([A-Za-z]+)_'` for "
            "identity-disjoint splits. "
        )
        + f"Groups crossing splits: **{len(crossing)}**"
        + (" (from the folder's own split)" if meta["preset_split"] else "")
        + ".\n",
    ]
    splits = meta["counts"]["splits"]
    out.append(
        _table(
            ["split", *classes, "total"],
            [
                [s, *(splits[s].get(c, 0) for c in classes), sum(splits[s].values())]
                for s in ("train", "val", "test")
            ],
        )
    )
    return "\n".join(out)


def _faces(ok, classes, config, sheets) -> str:
    if not config["face_crop"]:
        return "## Face crop\n\nOff (`--no-face-crop`): the centre square of each image was kept.\n"
    out = [
        f"## Face detection (YuNet, score >= {config['face_threshold']}, "
        f"margin {config['face_margin']} of the face box per side)\n"
    ]
    table = []
    for c in classes:
        rows = [r for r in ok if r["label"] == c]
        found = sum(1 for r in rows if r.get("face_score"))
        multi = sum(1 for r in rows if (r.get("n_faces") or 0) > 1)
        table.append([c, len(rows), found, _rate(found, len(rows)), len(rows) - found, multi])
    out.append(
        _table(
            [
                "class",
                "usable",
                "face found",
                "rate",
                "no face (centre square)",
                "several faces (most confident kept)",
            ],
            table,
        )
    )
    for c in classes:
        if c in sheets.get("samples", {}):
            out.append(f"Random {c} crops: ![{c}]({sheets['samples'][c]})\n")
    for c in classes:
        fallback = [r for r in ok if r["label"] == c and "no_face" in r["flags"]]
        if fallback:
            out.append(
                f"No face found in {len(fallback)} {c} image(s)"
                + (
                    f", first {SHEET_SAMPLES}: ![no face {c}]({sheets['no_face'][c]})"
                    if c in sheets.get("no_face", {})
                    else ":"
                )
                + "\n"
            )
            out.append(
                _details(f"{c} without a detected face", [f"`{r['source']}`" for r in fallback])
            )
    return "\n".join(out)


def _write_sheets(out_dir, rows, images, classes, sizes, seed) -> dict:
    size = max(s for s in sizes if s <= 128) if min(sizes) <= 128 else min(sizes)
    sheets: dict[str, dict[str, str]] = {"samples": {}, "no_face": {}}
    rng = random.Random(seed)
    ok = [row for row in rows if row["status"] == "ok"]
    for c in classes:
        members = [r for r in ok if r["label"] == c]
        picks = rng.sample(members, min(SHEET_SAMPLES, len(members)))
        if picks:
            rel = f"sheets/samples_{c}.png"
            save_grid(
                np.stack([images[r["source"]][size] for r in picks]), out_dir / rel, SHEET_COLUMNS
            )
            sheets["samples"][c] = rel
        fallback = [r for r in members if "no_face" in r["flags"]][:SHEET_SAMPLES]
        if fallback:
            rel = f"sheets/no_face_{c}.png"
            save_grid(
                np.stack([images[r["source"]][size] for r in fallback]),
                out_dir / rel,
                SHEET_COLUMNS,
            )
            sheets["no_face"][c] = rel
    return sheets


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.1f} %)" if n else "n/a"


def _table(head: list, body: list[list]) -> str:
    lines = [
        "| " + " | ".join(str(h) for h in head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _details(summary: str, items: list[str]) -> str:
    if not items:
        return ""
    body = "<br>\n".join(items)
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>\n"
