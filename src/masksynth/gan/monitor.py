"""What a GAN run shows while it trains: metrics.jsonl, TensorBoard, sample grids, warnings.

Per pair it averages the step values (losses, D(x), D(G(z))) between log lines, stops the
run on a non-finite loss (keeping the last good checkpoint) and warns when D has won.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from masksynth.config import GanConfig
from masksynth.distributed import Ranks, any_rank, mean_over_ranks
from masksynth.errors import MasksynthError
from masksynth.gan.checkpoint import checkpoint_path
from masksynth.gan.generate import generate, latents
from masksynth.gan.loss import Objective
from masksynth.gan.pair import GanPair, pair_for
from masksynth.render.sheets import beside_real, save_grid

log = logging.getLogger(__name__)
GRID_SIZE = 32  # synthetic faces per grid, and as many real ones below them
D_WINS_AT = 0.02  # mean D(G(z)) below this (with D(x) above 1 - this) means D has won
# epoch grids: after each of the first GRID_EPOCHS epochs, then every GRID_EPOCHS-th and the
# last: an hour's run has ~90 of ~800 epochs (every epoch's wrote ~1 GB with TensorBoard's
# copies, and 0.18 s an epoch outside the time budget)
GRID_EPOCHS = 10


def grid_due(epoch: int, last: bool) -> bool:
    """Whether the epoch (counted from 1) just finished writes grids/<class>/epoch_NNNN.png."""
    return last or epoch <= GRID_EPOCHS or epoch % GRID_EPOCHS == 0


class Diverged(MasksynthError):
    pass


class Monitor:
    def __init__(
        self,
        config: GanConfig,
        pairs: list[GanPair],
        objective: Objective,
        run_dir: Path,
        ranks: Ranks,
        device: torch.device,
    ) -> None:
        self.config, self.pairs, self.objective = config, pairs, objective
        self.run_dir, self.ranks, self.device = run_dir, ranks, device
        self.metrics_file = run_dir / "metrics.jsonl"
        self.sums: dict[str, dict[str, torch.Tensor]] = {p.name: {} for p in pairs}
        self.counts = dict.fromkeys(self.sums, 0)
        self.d_wins_steps = dict.fromkeys(self.sums, 0)
        self._writer = None
        self.real: dict[int, torch.Tensor] = {}  # class -> real test faces shown in the grids

    def add(self, pair: GanPair, loss_d, loss_g, d_real, d_fake) -> None:
        """One step's values (tensors, kept on the device until the next log line)."""
        values = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real.detach()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach()).mean(),
        }
        sums = self.sums[pair.name]
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        self.counts[pair.name] += 1

    def log(self, step: int, epoch: int, elapsed: float, speed: float) -> str:
        """Write the averages since the last line; returns the progress bar's text."""
        for name, count in self.counts.items():  # each rank saw its share: report the mean
            if count:
                self.sums[name] = mean_over_ranks(self.sums[name], self.ranks, self.device)
        self.check_finite(epoch, step)
        shown = []
        for pair in self.pairs:
            count = self.counts[pair.name]
            if not count:
                continue
            means = {k: float(v) / count for k, v in self.sums[pair.name].items()}
            record = {
                "step": step,
                "epoch": epoch,
                "unit": pair.name,
                **{k: round(v, 5) for k, v in means.items()},
                "img_per_s": round(speed, 1),
                "train_s": round(elapsed, 1),
                **self.objective.log_fields(pair),
            }
            if self.ranks.main:
                with open(self.metrics_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                writer = self._tensorboard()
                if writer is not None:
                    for key, value in means.items():
                        writer.add_scalar(f"{pair.name}/{key}", value, step)
                self._watch_balance(pair.name, means)
            shown.append(
                f"{pair.name[:10]} D {means['loss_d']:.2f} G {means['loss_g']:.2f} "
                f"D(x) {means['d_real']:.2f} D(G(z)) {means['d_fake']:.2f}"
            )
            self.sums[pair.name], self.counts[pair.name] = {}, 0
        return " | ".join(shown) + f" | {speed:.0f} img/s" + self.objective.progress()

    def check_finite(self, epoch: int, step: int) -> None:
        bad = [
            f"{name}: {key} is {float(value)}"
            for name, sums in self.sums.items()
            for key, value in sums.items()
            if key in ("loss_d", "loss_g") and not math.isfinite(float(value))
        ]
        if any_rank([bool(bad)], self.ranks, self.device)[0]:  # every rank stops together
            raise Diverged(
                f"training diverged ({bad[0] if bad else 'in another process'}) at epoch "
                f"{epoch}, step {step}; the last good checkpoint is kept at "
                f"{checkpoint_path(self.run_dir)}: lower --lr-g/--lr-d or use --precision fp32"
            )

    def _watch_balance(self, name: str, means: dict[str, float]) -> None:
        if means["d_fake"] < D_WINS_AT and means["d_real"] > 1 - D_WINS_AT:
            self.d_wins_steps[name] += self.config.log_every_steps
            if self.d_wins_steps[name] == 20 * self.config.log_every_steps:
                log.warning(
                    "%s: the discriminator has won outright for %d steps "
                    "(D(x) %.3f, D(G(z)) %.3f): G gets no signal. Try DiffAugment "
                    "(--preset quick or best), a lower --lr-d or more data.",
                    name,
                    self.d_wins_steps[name],
                    means["d_real"],
                    means["d_fake"],
                )
        else:
            self.d_wins_steps[name] = 0

    def grids(self, epoch: int, classes: list[str], epoch_file: bool = True) -> None:
        """The same fixed latents at every grid (`grid_due`), per class:
        grids/<class>/epoch_NNNN.png (and TensorBoard's copy) unless not `epoch_file`, and
        the latest as grids/<class>.png; the synthetic faces above a blank row and real test
        faces of the class below them."""
        if not self.ranks.main:
            return
        grids = self.run_dir / "grids"
        for k, name in enumerate(classes):
            pair = pair_for(self.pairs, k)
            z = latents(self.config.seed, k, GRID_SIZE, self.config.z_dim)
            labels = torch.full((GRID_SIZE,), k) if pair.class_index is None else None
            images = generate(pair.sampler, z, labels, self.device)
            shown = beside_real(images, self.real.get(k))
            save_grid(shown, grids / f"{name}.png")
            if not epoch_file:
                continue
            save_grid(shown, grids / name / f"epoch_{epoch:04d}.png")
            writer = self._tensorboard()
            if writer is not None:
                writer.add_images(f"{name}/samples", images[:16], epoch)

    def kept_grids(self, classes: list[str], sample) -> None:
        """With a class selection, once training ends: grids/<class>_kept.png, the first
        fakes the run hands out (`sample`: class index, n -> the evaluation latents' kept
        images) above real test faces of the class; the epoch grids show every fake."""
        if not self.ranks.main:
            return
        for k, name in enumerate(classes):
            shown = beside_real(sample(k, GRID_SIZE), self.real.get(k))
            save_grid(shown, self.run_dir / "grids" / f"{name}_kept.png")

    def scalars(self, record: dict) -> None:
        """A record of its own kind (e.g. quality on the val split) into metrics.jsonl."""
        if self.ranks.main:
            with open(self.metrics_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _tensorboard(self):
        if self._writer is None:
            try:
                # imported on first use: tensorboard takes seconds to import and is optional
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # JSONL is always written
                self._writer = False
                return None
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer or None

    def close(self) -> None:
        if self._writer:
            self._writer.close()
