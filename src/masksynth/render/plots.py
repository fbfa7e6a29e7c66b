"""Figures of the experiment report (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from masksynth.fileio import atomic_open  # noqa: E402

COLOURS = {"real": "#2f6fab", "real+synthetic": "#d9822b", "synthetic-only": "#7a7a7a"}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrices(
    confusions: dict[str, dict], positive: str, negative: str, path: Path
) -> Path:
    """One 2x2 matrix per scenario (counts summed over seeds), positive class first."""
    fig, axes = plt.subplots(
        1, len(confusions), figsize=(4.2 * len(confusions), 3.4), constrained_layout=True
    )
    for ax, (name, c) in zip(np.atleast_1d(axes), confusions.items(), strict=True):
        matrix = np.array([[c["tp"], c["fn"]], [c["fp"], c["tn"]]])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(value),
                ha="center",
                va="center",
                color="white" if value > matrix.max() / 2 else "black",
                fontsize=12,
            )
        ax.set_xticks([0, 1], [f"pred. {positive}", f"pred. {negative}"], fontsize=8)
        ax.set_yticks([0, 1], [positive, negative], fontsize=8)
        ax.set_title(name, fontsize=10)
    fig.suptitle("Confusion matrices on the real test split (all seeds summed)", fontsize=10)
    return _save(fig, path)


def roc_curves(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path: Path,
    title: str = "ROC on the real test split (one line per seed)",
    xlabel: str = "1 - specificity",
    ylabel: str = "sensitivity",
) -> Path:
    """ROC of each named score (one line per seed); y_true is 1 for the positive class."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, runs in curves.items():
        for k, (y_true, y_score) in enumerate(runs):
            if 0 < y_true.sum() < len(y_true):
                fpr, tpr, _ = roc_curve(y_true, y_score)
                ax.plot(
                    fpr,
                    tpr,
                    color=COLOURS.get(name),  # None: matplotlib's colour cycle
                    alpha=0.8,
                    lw=1.3,
                    label=name if k == 0 else None,
                )
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_curves(histories: dict[str, list[list[dict]]], path: Path) -> Path:
    """Train loss and val balanced accuracy per epoch, per scenario and seed."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, runs in histories.items():
        for k, history in enumerate(runs):
            epochs = [h["epoch"] for h in history]
            kwargs = {
                "color": COLOURS.get(name, "k"),
                "alpha": 0.8,
                "label": name if k == 0 else None,
            }
            left.plot(epochs, [h["train_loss"] for h in history], **kwargs)
            right.plot(epochs, [h["val_balanced_accuracy"] for h in history], **kwargs)
    left.set_title("training loss", fontsize=10)
    right.set_title("validation balanced accuracy (model selection)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return _save(fig, path)


def histograms(panels: list[dict], path: Path) -> Path:
    """One panel per dict: {'title', 'series': {label: values}, 'line': x or None, 'xlabel'}."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        series = {k: np.asarray(v)[np.isfinite(v)] for k, v in panel["series"].items()}
        values = np.concatenate([v for v in series.values() if len(v)] or [np.zeros(1)])
        bins = np.linspace(values.min(), values.max() + 1e-9, 40)
        for label, v in series.items():
            if not len(v):  # e.g. no face found in any synthetic image
                continue
            ax.hist(v, bins=bins, density=True, alpha=0.55, label=f"{label} (n={len(v)})")
        if panel.get("line") is not None:
            ax.axvline(panel["line"], color="crimson", ls="--", lw=1.2, label="threshold")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.legend(fontsize=7)
    return _save(fig, path)


def robustness_bars(tables: dict[str, dict], path: Path) -> Path:
    """Balanced accuracy under each degradation (one bar group per row of
    `classify.robustness`), one bar per named model, the clean accuracy as a line."""
    names = list(tables)
    rows = tables[names[0]]["rows"]
    labels = [f"{r['degradation']}\n{r['strength']} {r['unit']}".strip() for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(rows) * max(1, len(names))), 3.6))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [r["balanced_accuracy"] or 0.0 for r in tables[name]["rows"]]
        xs = np.arange(len(rows)) + (k - (len(names) - 1) / 2) * width
        colour = COLOURS.get(name)
        ax.bar(xs, values, width, label=name, color=colour, alpha=0.85)
        clean = tables[name]["clean_balanced_accuracy"]
        if clean is not None:
            ax.axhline(clean, color=colour or "k", ls="--", lw=1, alpha=0.7)
    ax.set_xticks(np.arange(len(rows)), labels, fontsize=7)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("balanced accuracy")
    ax.set_title("test split under camera degradations (dashed: clean)", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def reliability_diagram(calibrations: dict[str, dict], path: Path) -> Path:
    """Accuracy against confidence per bin, with the ECE, for each named `calibration`
    record of `evaluate` (its `reliability` bins and `ece`)."""
    fig, ax = plt.subplots(figsize=(4.4, 4.2))
    for name, c in calibrations.items():
        ax.plot(
            c["reliability"]["confidence"],
            c["reliability"]["accuracy"],
            marker="o",
            color=COLOURS.get(name),
            label=f"{name} (ECE {c['ece']:.3f})",
        )
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability on the test split", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)
