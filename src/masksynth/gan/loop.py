"""The GAN training loop: epochs of steps over every G/D pair, checkpoints, Ctrl-C.

Each step: real batch (mirrored at random), fakes from fresh noise, D's update, G's update,
the EMA generator. The data order is a fixed shuffle per (seed, epoch, pair), so a run
resumed mid-epoch continues exactly; saves and stops are decided by all processes together.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from masksynth.config import VAL
from masksynth.device import autocast
from masksynth.distributed import any_rank, average_buffers, gather, min_over_ranks
from masksynth.gan.checkpoint import checkpoint_path, pairs_state, rng_state, save_checkpoint
from masksynth.gan.diffaugment import diff_augment
from masksynth.gan.ema import ema_update, refresh_batchnorm
from masksynth.gan.generate import evaluation_images
from masksynth.gan.monitor import Monitor, grid_due
from masksynth.gan.pair import GanPair, pair_for
from masksynth.gan.select import ClassSelection, class_selection
from masksynth.interrupts import DeferredInterrupt, ImmediateInterrupt
from masksynth.progress import progress
from masksynth.seeds import BATCHNORM, GAN_ORDER, derive_seed

log = logging.getLogger(__name__)
Sample = Callable[[int, int], torch.Tensor]  # (class index, n) -> n uint8 images
# (split, n per class, sample, device) -> scores per class, e.g. metrics.gan_quality's
Quality = Callable[[str, int, Sample, torch.device], dict]


class Trainer:
    """The run's pairs over `data` (the train split), stepped by `objective`."""

    def __init__(self, config, pairs, objective, data, device, precision, run_dir, ranks):
        self.config, self.pairs, self.objective = config, pairs, objective
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        self.classes = data.class_names
        self.device, self.run_dir, self.ranks = device, run_dir, ranks
        self.autocast = autocast(device, precision)
        self.monitor = Monitor(config, pairs, objective, run_dir, ranks, device)
        self.epoch = self.global_step = self.next_step = 0
        # the epochs to train: --epochs, or what fits the --minutes budget (see _plan)
        self.planned_epochs, self.planned = config.epochs, not config.minutes
        self.elapsed, self.stop_reason, self.last_save = 0.0, "", 0.0
        self.buffers_at = -1  # the global step whose BatchNorm statistics are in place
        self.grids_at = -1  # the global step grids/<class>.png shows
        self.first_epoch_s = 0.0  # the first epoch's training time (budget planning)
        self.quality: Quality | None = None
        self.prep_fingerprint = ""  # saved in the checkpoint: resume checks it
        self._selections: dict[int, tuple[int, ClassSelection | None]] = {}  # see sample

    def run(self, next_step: int) -> None:
        """Train to the planned epochs (or an earlier stop), checkpointing as it goes.

        Ctrl-C takes effect between two steps: the state is saved, then KeyboardInterrupt
        goes up. A second Ctrl-C stops at once and keeps the previous checkpoint.
        """
        self.next_step, self.last_save = next_step, time.monotonic()
        try:
            with DeferredInterrupt() as stop:
                while self.epoch < self.planned_epochs:
                    self._epoch(stop)
                    if self.stop_reason:
                        self._save(self.next_step)
                        self._latest_grids()
                        return
                    self.epoch, self.next_step = self.epoch + 1, 0
                    self._plan()
                    self._average_buffers()
                    self._end_of_epoch()
                    self._save(0)
                self.stop_reason = "done"
        except ImmediateInterrupt:
            log.warning("interrupted mid-step: the previous checkpoint is kept")
            raise
        except KeyboardInterrupt:
            self.monitor.check_finite(self.epoch + 1, self.global_step)
            self._save(self.next_step)
            self._latest_grids()
            log.warning(
                "interrupted: checkpoint saved at epoch %d, step %d", self.epoch + 1, self.next_step
            )
            raise
        finally:
            self.monitor.close()

    def _epoch(self, stop: DeferredInterrupt) -> None:
        """The steps of one epoch from `next_step` on, every pair in each."""
        config = self.config
        orders = self._epoch_orders(self.epoch)
        steps = max(math.ceil(len(o) / config.batch_size) for o in orders)
        bar = progress(
            steps, f"epoch {self.epoch + 1}/{self.planned_epochs}", "step", self.next_step
        )
        images_done, started = 0, time.monotonic()
        for step in range(self.next_step, steps):
            self.stop_reason = self.objective.stop_reason() or ""
            if self.stop_reason:
                break
            t0 = time.monotonic()
            for pair, order in zip(self.pairs, orders, strict=True):
                batch, n = self.objective.batch(pair, order, step, config.batch_size, self.ranks)
                if batch is not None:
                    self.train_step(pair, batch)
                    images_done += n
            self.global_step += 1
            self.elapsed += time.monotonic() - t0
            self.next_step = step + 1
            if self.global_step % config.log_every_steps == 0:
                speed = images_done / max(time.monotonic() - started, 1e-9)
                text = self.monitor.log(self.global_step, self.epoch + 1, self.elapsed, speed)
                bar.set_postfix_str(text)
            bar.update()
            if self._stop_or_save(stop):
                break
        bar.close()

    def _plan(self) -> None:
        """With a budget in minutes: after each epoch, as many epochs as fit what is left.

        The first epoch (kernel warm-up) is slower than the rest, so later epochs are timed
        without it: planning once from it alone left a fifth to a third of the budget unused.
        """
        if not self.config.minutes:
            return
        if not self.first_epoch_s:  # after the first epoch (or a checkpoint without it)
            self.first_epoch_s = self.elapsed / self.epoch
        later = self.epoch - 1
        per_epoch = (self.elapsed - self.first_epoch_s) / later if later else self.first_epoch_s
        left = self.config.minutes * 60 - self.elapsed
        fit = self.epoch + int(left / max(per_epoch, 1e-9))
        # every rank times itself: all keep to the shortest plan, or one would wait forever
        # for the others in a collective of an epoch they never start
        planned = min_over_ranks(
            max(self.epoch, min(self.config.epochs, fit)), self.ranks, self.device
        )
        if planned != self.planned_epochs or not self.planned:
            # the first plan is news; its updates, one per epoch or so, are details
            log.log(
                logging.DEBUG if self.planned else logging.INFO,
                "budget %.1f min at %.1f s per epoch: %d epochs (recorded; --epochs %d "
                "--minutes 0 replays them)",
                self.config.minutes,
                per_epoch,
                planned,
                planned,
            )
        self.planned_epochs, self.planned = planned, True

    def _stop_or_save(self, stop: DeferredInterrupt) -> bool:
        """After a step, decided by all processes together (a save or stop is collective):
        Ctrl-C, a checkpoint that is due, the time budget. True: stop the epoch here."""
        budget = self.config.max_minutes * 60
        stop_now, save_now, time_up = any_rank(
            [stop.requested, self._due(), bool(budget and self.elapsed >= budget)],
            self.ranks,
            self.device,
        )
        if stop_now:
            raise KeyboardInterrupt
        if save_now:
            self._save(self.next_step)
        if time_up:
            self.stop_reason = "time limit"
        return time_up

    def _epoch_orders(self, epoch: int) -> list[torch.Tensor]:
        """A fixed shuffle per (seed, epoch, pair): resuming mid-epoch sees the same order."""
        orders = []
        for k, pair in enumerate(self.pairs):
            gen = torch.Generator().manual_seed(derive_seed(self.config.seed, GAN_ORDER, epoch, k))
            shuffle = torch.randperm(len(pair.indices), generator=gen)
            orders.append(pair.indices[shuffle.to(pair.indices.device)])
        return orders

    def _due(self) -> bool:
        every = self.config.checkpoint_every_steps
        if every and self.global_step % every == 0:
            return True
        return time.monotonic() - self.last_save >= self.config.checkpoint_minutes * 60

    def train_step(self, pair: GanPair, batch: torch.Tensor) -> None:
        """One step of one pair on a batch of training-image rows (this process's share)."""
        config, objective = self.config, self.objective
        real = self.images[batch].float().div_(127.5).sub_(1.0)
        if config.xflip:
            flip = torch.rand(len(batch), device=self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        real = real.contiguous(memory_format=torch.channels_last)
        labels = self.labels[batch] if config.mode == "conditional" else None
        n_fake, fake_labels = objective.fakes(pair, len(batch), labels, len(self.classes))
        z = torch.randn(n_fake, config.z_dim, 1, 1, device=self.device)
        with self.autocast:
            fake = pair.G_train(z, fake_labels)

        def augment(x: torch.Tensor) -> torch.Tensor:
            return diff_augment(x, config.diffaugment)

        loss_d, d_real, d_fake = objective.discriminator_step(
            pair, real, labels, fake, fake_labels, augment, self.autocast
        )
        loss_g = objective.generator_step(pair, fake, fake_labels, augment, self.autocast)
        if pair.G_ema is not None:
            steps = pair.opt_g.state[next(iter(pair.G.parameters()))]["step"]
            ema_update(pair.G_ema, pair.G, config.ema_decay, float(steps), config.ema_ramp)
        if len(batch):  # an empty Poisson batch has no D(x) to report
            self.monitor.add(pair, loss_d, loss_g, d_real, d_fake)

    def sample(self, class_index: int, n: int) -> torch.Tensor:
        """n images of a class from fixed evaluation latents (apart from `sample`'s), through
        the run's class selection."""
        pair = pair_for(self.pairs, class_index)
        conditional, z_dim = pair.class_index is None, self.config.z_dim
        # the fakes `sample` would hand out: through the class selection, set on today's D
        # (calibrated once per class and step: the final grid and metrics share it)
        step, selection = self._selections.get(class_index, (-1, None))
        if step != self.global_step:
            selection = class_selection(
                {class_index: (pair.sampler, pair.D, conditional)},
                self.config.class_keep,
                z_dim,
                self.device,
            )
            self._selections[class_index] = (self.global_step, selection)
        kept = None if selection is None else selection.kept
        return evaluation_images(
            pair.sampler, class_index, n, z_dim, conditional, self.device, kept
        )

    def _end_of_epoch(self) -> None:
        if not self.ranks.main:
            return
        if grid_due(self.epoch, last=self.epoch >= self.planned_epochs):
            self.monitor.grids(self.epoch, self.classes)
            self.grids_at = self.global_step
        every = self.config.metrics_every_epochs
        if every and self.epoch % every == 0 and self.epoch < self.planned_epochs and self.quality:
            scores = self.quality(VAL, self.config.metrics_samples, self.sample, self.device)
            record = {"step": self.global_step, "epoch": self.epoch, "split": VAL, **scores}
            self.monitor.scalars(record)

    def _latest_grids(self) -> None:
        """A run stopped before its plan ends (time limit, privacy budget, Ctrl-C):
        grids/<class>.png shows the generator its checkpoint holds, not an epoch's grid
        up to GRID_EPOCHS - 1 epochs older."""
        if self.ranks.main and self.grids_at != self.global_step:
            self.monitor.grids(self.epoch, self.classes, epoch_file=False)
            self.grids_at = self.global_step

    def _average_buffers(self) -> None:
        """BatchNorm statistics to save or sample with: averaged over the processes, and the
        EMA generator's computed for its own weights (the live G's would not fit them). Once
        per step: the grids and the checkpoint after an epoch share them (each refresh of
        the EMA generator's costs about as much as the grids: 0.18 s for quick's on 2 cores).
        The same on every process, as the step count is."""
        if self.buffers_at == self.global_step:
            return
        for pair in self.pairs:
            if pair.G_ema is not None:
                seed = derive_seed(self.config.seed, BATCHNORM, self.global_step)
                refresh_batchnorm(pair.G_ema, seed, self.device)
        modules = [m for p in self.pairs for m in (p.G, p.D)]
        average_buffers(modules + [p.G_ema for p in self.pairs if p.G_ema is not None], self.ranks)
        self.buffers_at = self.global_step

    def _save(self, next_step: int) -> None:
        self.monitor.check_finite(self.epoch + 1, self.global_step)
        self._average_buffers()
        self.last_save = time.monotonic()
        rngs = gather(rng_state(), self.ranks)  # each rank's noise continues on resume
        if not self.ranks.main:
            return
        save_checkpoint(
            checkpoint_path(self.run_dir),
            {
                "config": self.config.to_dict(),
                "prep_fingerprint": self.prep_fingerprint,
                "classes": self.classes,
                "unit_classes": {p.name: p.class_index for p in self.pairs},
                "epoch": self.epoch,
                "next_step": next_step,
                "global_step": self.global_step,
                "elapsed_s": self.elapsed,
                "first_epoch_s": self.first_epoch_s,
                # a budget run's plan (None: the run trains --epochs)
                "planned_epochs": self.planned_epochs
                if self.config.minutes and self.planned
                else None,
                "rng": rngs[0],
                **({"rng_ranks": rngs} if self.ranks.on else {}),
                "units": pairs_state(self.pairs),
                **self.objective.checkpoint_state(),
            },
        )
