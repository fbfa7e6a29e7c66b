"""The `train-gan` stage: DCGAN training from the uint8 cache, resumable to the exact bit.

Per-class mode trains one G/D pair per class, interleaved step by step, each over its own
class once per epoch; conditional mode trains one pair over all classes. Full-state
checkpoints are written atomically at each epoch end, every `checkpoint_minutes`, and on
Ctrl-C; `--resume` continues from the last one exactly (same data order, noise, weights).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm import tqdm

from masksynth.config import GAN_RUN_SETTINGS, GanConfig
from masksynth.data import load_split
from masksynth.data.cache import read_prepared
from masksynth.device import autocast as autocast_for
from masksynth.device import resolve_precision
from masksynth.distributed import (
    Ranks,
    any_rank,
    average_buffers,
    check_in_sync,
    gather,
    mean_over_ranks,
    setup,
    wrap,
)
from masksynth.errors import MasksynthError
from masksynth.fileio import file_sha256, read_json, write_json
from masksynth.gan.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from masksynth.gan.diffaugment import TRANSFORMS, diff_augment
from masksynth.gan.generate import generate, latents
from masksynth.gan.networks import IMAGE_SIZE, Discriminator, Generator
from masksynth.provenance import changes
from masksynth.report.sheets import save_grid
from masksynth.runinfo import run_record
from masksynth.seeds import BATCHNORM, GAN_ORDER, PROCESS, RESUMED_PROCESS, derive_seed
from masksynth.torchio import load_weights

if TYPE_CHECKING:  # opacus takes seconds to import: gan.dp is imported only when DP is on
    from masksynth.gan.dp import PrivateD

log = logging.getLogger(__name__)

GRID_SIZE = 64
D_WINS_AT = 0.02  # mean D(G(z)) below this (with D(x) above 1 - this) means D has won


@dataclass
class Unit:
    """One G/D pair and what it learns from."""

    name: str  # the class name, or 'all' for the conditional pair
    class_index: int | None  # None: conditional over every class
    indices: torch.Tensor  # rows of the training images it learns from
    G: Generator
    D: Discriminator
    G_ema: Generator | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    d_wins_steps: int = 0
    dp: PrivateD | None = None  # set when training with differential privacy
    # What the training step calls: DDP wrappers under torchrun, else G and D themselves
    G_train: torch.nn.Module | None = None
    D_train: torch.nn.Module | None = None


class Diverged(MasksynthError):
    pass


def train_gan(
    prep_dir: str | Path, run_dir: str | Path, config: GanConfig, resume: bool = False
) -> dict:
    """Train (or resume) and return the run summary written to `gan.json`."""
    wall_start = time.perf_counter()
    prep_dir, run_dir = Path(prep_dir), Path(run_dir)
    ckpt_file = checkpoint_path(run_dir)
    prep_fingerprint = read_prepared(prep_dir)["fingerprint"]
    state = None
    if resume:
        state = load_checkpoint(ckpt_file)
        config = _resumable(run_dir, state, config, prep_fingerprint)
    elif ckpt_file.exists():
        raise MasksynthError(
            f"{run_dir} already holds a GAN run: pass --resume to continue it "
            "or choose another --out"
        )
    _validate(config)
    ranks, device = setup(config.device)
    if ranks.on and config.dp_epsilon:
        raise MasksynthError("--dp-epsilon trains in one process: run it without torchrun")
    precision = resolve_precision(config.precision, device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed)  # the same initial weights on every rank

    data = load_split(prep_dir, "train", IMAGE_SIZE)
    if len(data.labels) == 0:
        raise MasksynthError(f"{prep_dir} has no training images")
    images = data.images.to(device)
    labels = data.labels.to(device)
    units = _build_units(config, data.class_names, data.labels, device)
    for unit in units:
        # D is called twice (real, fake) before one backward: buffers are not re-broadcast
        # between the calls (that would change BatchNorm's statistics in place).
        unit.G_train = wrap(unit.G, ranks, device, broadcast_buffers=False)
        unit.D_train = wrap(unit.D, ranks, device, broadcast_buffers=False)
    if ranks.on:  # each rank draws its own noise and augmentations
        torch.manual_seed(derive_seed(config.seed, PROCESS, ranks.rank))
    delta = None
    if config.dp_epsilon:
        from masksynth.gan import dp

        delta = dp.attach(units, config, len(labels), state["dp"] if state else None)
        shown = dp.record(units, config, delta)
        log.info(
            "differential privacy on D: target epsilon %g, delta %.2g, noise multiplier %.3f, "
            "clip %g, sample rate %.4f, %d planned steps",
            config.dp_epsilon,
            delta,
            shown["noise_multiplier"],
            config.dp_max_grad_norm,
            shown["sample_rate"],
            shown["planned_steps"],
        )

    epoch, next_step, global_step, elapsed = 0, 0, 0, 0.0
    if state is not None:
        _restore(units, state, ckpt_file)
        epoch, next_step = state["epoch"], state["next_step"]
        global_step, elapsed = state["global_step"], state["elapsed_s"]
        _restore_rng(state, ranks)
        log.info("resuming %s at epoch %d, step %d", run_dir, epoch + 1, next_step)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "stage": "train-gan",
        "prep_dir": str(prep_dir.resolve()),
        "prep_fingerprint": prep_fingerprint,
        "inputs": gan_inputs(prep_fingerprint, config),
        "config": config.to_dict(),
        "classes": data.class_names,
        "device": str(device),
        "precision": precision,
        "processes": ranks.world,
        "train_images": dict(_class_counts(data)),
        **run_record(),
    }
    if ranks.main:
        write_json(run_dir / ("gan.json" if state is None else "gan-resume.json"), meta)

    trainer = _Trainer(
        config, units, images, labels, data.class_names, device, precision, run_dir, prep_dir
    )
    trainer.dp_delta = delta
    trainer.ranks = ranks
    trainer.prep_fingerprint = prep_fingerprint
    trainer.run(epoch, next_step, global_step, elapsed)
    check_in_sync({f"{u.name}.{n}": getattr(u, n) for u in units for n in ("G", "D")}, ranks)
    summary = {
        **meta,
        "epochs_done": trainer.epoch,
        "steps": trainer.global_step,
        "train_seconds": round(trainer.elapsed, 1),
        "stopped": trainer.stop_reason,
    }
    if delta is not None:
        summary["dp"] = dp.record(units, config, delta)
    if not ranks.main:
        return summary
    if config.final_metrics and trainer.stop_reason == "done":
        from masksynth.metrics.gan_quality import evaluate_generators

        summary["metrics"] = evaluate_generators(
            prep_dir, "test", config.metrics_samples, units, device
        )
        write_json(run_dir / "metrics.json", summary["metrics"])
    summary["checkpoint_sha256"] = file_sha256(ckpt_file)  # what this record describes
    previous = read_json(run_dir / "gan.json")
    earlier = previous.get("total_seconds", 0.0) if state is not None else 0.0
    summary["total_seconds"] = round(earlier + time.perf_counter() - wall_start, 1)
    write_json(run_dir / "gan.json", {**previous, **summary})
    return summary


def _validate(config: GanConfig) -> None:
    if config.mode not in ("per-class", "conditional"):
        raise MasksynthError("--mode must be per-class or conditional")
    if config.batch_size < 2 or config.epochs < 1:
        raise MasksynthError("--batch-size must be >= 2 and --epochs >= 1")
    for name in filter(None, config.diffaugment.split(",")):
        if name.strip() not in TRANSFORMS:
            raise MasksynthError(
                f"unknown DiffAugment transform {name!r}: choose from {', '.join(TRANSFORMS)}"
            )
    if not 0 <= config.ema_decay < 1:
        raise MasksynthError("--ema-decay must be in [0, 1)")
    if config.dp_epsilon:
        from masksynth.gan import dp

        dp.check(config)


def gan_inputs(prep_fingerprint: str, config: GanConfig) -> dict:
    """What a GAN run is built from: the prepared data and the recipe (see provenance)."""
    return {"prepared": prep_fingerprint, "recipe": config.recipe()}


def resume_config(run_dir: Path, preset: str | None = None, **given) -> GanConfig:
    """The config that resuming `run_dir` asks for: the saved one, with the options given now.

    Options left out (None) keep their saved values; `train_gan` refuses those that conflict.
    """
    saved = load_checkpoint(checkpoint_path(Path(run_dir)))["config"]
    asked = {k: v for k, v in given.items() if v is not None}
    if preset is not None:
        asked["preset"] = preset
    return GanConfig.from_dict({**saved, **asked})


def _resumable(run_dir: Path, state: dict, config: GanConfig, prep_fingerprint: str) -> GanConfig:
    """The saved config with this call's run settings, or a one-line refusal of a conflict."""
    saved = GanConfig.from_dict(state["config"])
    trained_on = state.get("prep_fingerprint")
    if trained_on is None and (run_dir / "gan.json").is_file():  # checkpoints before provenance
        trained_on = read_json(run_dir / "gan.json").get("prep_fingerprint")
    if trained_on != prep_fingerprint:
        raise MasksynthError(
            f"cannot resume {run_dir}: it was trained on prepared data {trained_on}, and the "
            f"prepared folder is now {prep_fingerprint} (re-prepared or another folder); "
            "train anew into another --out"
        )
    conflicts = changes(saved.recipe(), config.recipe())
    if conflicts:
        raise MasksynthError(
            f"cannot resume {run_dir} with other settings ({'; '.join(conflicts)}): "
            "leave them out to keep the run's own, or train anew into another --out"
        )
    if config.epochs < state["epoch"]:
        raise MasksynthError(
            f"{run_dir} has already trained {state['epoch']} epochs: --epochs must be at least "
            "that to resume it"
        )
    run = {k: v for k, v in config.to_dict().items() if k in GAN_RUN_SETTINGS}
    return GanConfig.from_dict({**saved.to_dict(), **run})


def _class_counts(data) -> dict[str, int]:
    counts = torch.bincount(data.labels, minlength=len(data.class_names)).tolist()
    return dict(zip(data.class_names, counts, strict=True))


def build_generator(config: GanConfig, n_classes: int) -> Generator:
    conditional = config.mode == "conditional"
    return Generator(config.z_dim, config.g_width, n_classes if conditional else 0)


def build_discriminator(config: GanConfig, n_classes: int) -> Discriminator:
    conditional = config.mode == "conditional"
    # DP needs per-sample gradients, which BatchNorm's batch statistics would mix up.
    d_norm = "group" if config.dp_epsilon else config.d_norm
    return Discriminator(config.d_width, n_classes if conditional else 0, d_norm)


def _build_units(
    config: GanConfig, classes: list[str], labels: torch.Tensor, device: torch.device
) -> list[Unit]:
    if config.mode == "conditional":
        plan = [("all", None, torch.arange(len(labels)))]
    else:
        plan = [(name, k, torch.nonzero(labels == k).flatten()) for k, name in enumerate(classes)]
    units = []
    for name, class_index, indices in plan:
        if len(indices) == 0:
            raise MasksynthError(f"class {name!r} has no training images")
        G = build_generator(config, len(classes)).to(device, memory_format=torch.channels_last)
        D = build_discriminator(config, len(classes)).to(device, memory_format=torch.channels_last)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if config.ema_decay else None
        opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=tuple(config.betas))
        opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=tuple(config.betas))
        unit = Unit(name, class_index, indices.to(device), G, D, G_ema, opt_g, opt_d)
        unit.G_train, unit.D_train = G, D
        units.append(unit)
    return units


def _restore_rng(state: dict, ranks: Ranks) -> None:
    saved = state.get("rng_ranks", [state["rng"]])
    if len(saved) == ranks.world:
        set_rng_state(saved[ranks.rank])
        return
    # Another number of processes than the run was saved with: it continues, not bit-exactly.
    log.warning(
        "resuming a run saved by %d process(es) with %d: the noise differs from then on",
        len(saved),
        ranks.world,
    )
    set_rng_state(saved[0])
    if ranks.on:
        seed = state["config"]["seed"]
        torch.manual_seed(derive_seed(seed, RESUMED_PROCESS, state["global_step"], ranks.rank))


def _restore(units: list[Unit], state: dict, path: Path) -> None:
    for unit in units:
        saved = state["units"][unit.name]
        parts = {"G": unit.G, "D": unit.D, "opt_g": unit.opt_g, "opt_d": unit.opt_d}
        if unit.G_ema is not None:
            parts["G_ema"] = unit.G_ema
        for key, part in parts.items():
            load_weights(part, saved.get(key), path, f"GAN checkpoint's {key} of {unit.name!r}")


def sampling_generator(unit: Unit) -> Generator:
    return unit.G_ema if unit.G_ema is not None else unit.G


class _Trainer:
    def __init__(
        self,
        config: GanConfig,
        units: list[Unit],
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        device: torch.device,
        precision: str,
        run_dir: Path,
        prep_dir: Path,
    ) -> None:
        self.config, self.units, self.images, self.labels = config, units, images, labels
        self.classes, self.device, self.precision = classes, device, precision
        self.run_dir, self.prep_dir = run_dir, prep_dir
        self.autocast = autocast_for(device, precision)
        self.epoch = self.global_step = 0
        self.elapsed = 0.0
        self.stop_reason = ""
        self.metrics_file = run_dir / "metrics.jsonl"
        self._writer = None
        self.dp_delta: float | None = None  # set when training with differential privacy
        self.ranks = Ranks()  # set under torchrun
        self.prep_fingerprint = ""  # saved in the checkpoint: resume checks it

    # -- the loop -------------------------------------------------------------------------
    def run(self, epoch: int, next_step: int, global_step: int, elapsed: float) -> None:
        config = self.config
        self.epoch, self.global_step, self.elapsed = epoch, global_step, elapsed
        last_save = time.monotonic()
        with _DeferredInterrupt() as stop:
            self._loop(config, next_step, last_save, stop)

    def _loop(self, config, next_step, last_save, stop) -> None:
        try:
            while self.epoch < config.epochs:
                orders = self._epoch_orders(self.epoch)
                steps = max(math.ceil(len(o) / config.batch_size) for o in orders)
                bar = tqdm(
                    total=steps,
                    initial=next_step,
                    unit="step",
                    dynamic_ncols=True,
                    desc=f"epoch {self.epoch + 1}/{config.epochs}",
                    disable=not self.ranks.main,
                )
                images_done, started = 0, time.monotonic()
                for step in range(next_step, steps):
                    if self._budget_spent():
                        break
                    t0 = time.monotonic()
                    for unit, order in zip(self.units, orders, strict=True):
                        if unit.dp is not None:  # every unit steps, on a Poisson sample
                            batch = unit.dp.sample(unit.indices)
                            self._train_step(unit, batch)
                            images_done += len(batch)
                            continue
                        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
                        # BatchNorm needs two samples on every rank
                        if len(batch) >= 2 * self.ranks.world:
                            self._train_step(unit, self.ranks.shard(batch))
                            images_done += len(batch)
                    self.global_step += 1
                    self.elapsed += time.monotonic() - t0
                    next_step = step + 1
                    if self.global_step % config.log_every_steps == 0:
                        speed = images_done / max(time.monotonic() - started, 1e-9)
                        bar.set_postfix_str(self._log(speed))
                    bar.update()
                    # The ranks decide together: a save or a stop is a collective step.
                    stop_now, save_now, time_up = any_rank(
                        [
                            stop.requested,
                            self._due(last_save),
                            bool(config.max_minutes and self.elapsed >= config.max_minutes * 60),
                        ],
                        self.ranks,
                        self.device,
                    )
                    if stop_now:
                        raise KeyboardInterrupt
                    if save_now:
                        self._save(next_step)
                        last_save = time.monotonic()
                    if time_up:
                        self.stop_reason = "time limit"
                        break
                bar.close()
                if self.stop_reason:
                    self._save(next_step)
                    return
                self.epoch, next_step = self.epoch + 1, 0
                self._average_buffers()
                self._end_of_epoch()
                self._save(0)
                last_save = time.monotonic()
            self.stop_reason = "done"
        except _ImmediateInterrupt:
            log.warning("interrupted mid-step: the previous checkpoint is kept")
            raise
        except KeyboardInterrupt:
            self._check_finite()
            self._save(next_step)
            log.warning(
                "interrupted: checkpoint saved at epoch %d, step %d", self.epoch + 1, next_step
            )
            raise
        finally:
            if self._writer is not None:
                self._writer.close()

    def _epoch_orders(self, epoch: int) -> list[torch.Tensor]:
        """A fixed shuffle per (seed, epoch, unit): resuming mid-epoch sees the same order."""
        orders = []
        for k, unit in enumerate(self.units):
            gen = torch.Generator().manual_seed(derive_seed(self.config.seed, GAN_ORDER, epoch, k))
            orders.append(
                unit.indices[
                    torch.randperm(len(unit.indices), generator=gen).to(unit.indices.device)
                ]
            )
        return orders

    def _budget_spent(self) -> bool:
        """A DP run stops at the end of its plan: one more step would exceed the target."""
        private = [u.dp for u in self.units if u.dp is not None]
        if not private or all(p.steps < p.planned_steps for p in private):
            return False
        self.stop_reason = "privacy budget"
        log.warning(
            "privacy budget spent (epsilon %.3f of %g after %d steps): stopping here, "
            "checkpoint saved; a DP run cannot train past the --epochs it was planned with",
            max(p.epsilon(self.dp_delta) for p in private),
            self.config.dp_epsilon,
            max(p.steps for p in private),
        )
        return True

    def _due(self, last_save: float) -> bool:
        every = self.config.checkpoint_every_steps
        if every and self.global_step % every == 0:
            return True
        return time.monotonic() - last_save >= self.config.checkpoint_minutes * 60

    # -- one step ---------------------------------------------------------------------------
    def _real_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        real = self.images[batch].float().div_(127.5).sub_(1.0)
        if self.config.xflip:
            flip = torch.rand(len(batch), device=self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        real = real.contiguous(memory_format=torch.channels_last)
        labels = self.labels[batch] if self.config.mode == "conditional" else None
        return real, labels

    def _train_step(self, unit: Unit, batch: torch.Tensor) -> None:
        config = self.config
        real, labels = self._real_batch(batch)
        n_fake, fake_labels = len(batch), labels
        if unit.dp is not None:
            # The fake batch must not depend on the private one: fixed size, random classes.
            n_fake = config.batch_size
            if labels is not None:
                fake_labels = torch.randint(len(self.classes), (n_fake,), device=self.device)
        z = torch.randn(n_fake, config.z_dim, 1, 1, device=self.device)
        policy = config.diffaugment
        if unit.dp is None:
            with self.autocast:
                fake = unit.G_train(z, labels)
                d_real = unit.D_train(diff_augment(real, policy), labels).float()
                d_fake = unit.D_train(diff_augment(fake.detach(), policy), labels).float()
                loss_d = F.binary_cross_entropy_with_logits(
                    d_real, torch.ones_like(d_real)
                ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            unit.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            unit.opt_d.step()
        else:
            with self.autocast:
                fake = unit.G_train(z, fake_labels)
            loss_d, d_real, d_fake = self._private_d_step(unit, real, labels, fake, fake_labels)
        # G's step needs D's input gradient only: backward(inputs=G's weights) skips D's
        # weight gradients (a third of D's backward) and, under torchrun, D's all-reduce.
        # Under DP the per-sample hooks stay off too.
        with unit.dp.generator_pass() if unit.dp is not None else contextlib.nullcontext():
            with self.autocast:
                d_gen = unit.D(diff_augment(fake, policy), fake_labels).float()
                loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            unit.opt_g.zero_grad(set_to_none=True)
            loss_g.backward(inputs=list(unit.G.parameters()))
            unit.opt_g.step()
        if unit.G_ema is not None:
            # Warm-up: early weights change fast, so a long average would mix bad generators.
            steps = unit.opt_g.state[next(iter(unit.G.parameters()))]["step"]
            decay = min(config.ema_decay, (1.0 + float(steps)) / (10.0 + float(steps)))
            _ema_update(unit.G_ema, unit.G, decay)
        if len(batch) == 0:  # an empty Poisson batch has no D(x) to report
            return
        values = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real.detach()).mean(),
            "d_fake": torch.sigmoid(d_fake.detach()).mean(),
        }
        for key, value in values.items():
            unit.sums[key] = unit.sums.get(key, 0.0) + value
        unit.count += 1

    def _private_d_step(self, unit, real, labels, fake, fake_labels):
        """D's DP-SGD step: real and fake images in one hooked pass, all clipped, noised once."""
        policy, private = self.config.diffaugment, unit.dp
        private.optimizer.zero_grad(set_to_none=True)
        n_real = len(real)
        images = torch.cat([diff_augment(real, policy), diff_augment(fake.detach(), policy)])
        both = None if labels is None else torch.cat([labels, fake_labels])
        with self.autocast:
            logits = unit.D(images.contiguous(memory_format=torch.channels_last), both).float()
        targets = torch.cat([torch.ones(n_real), torch.zeros(len(fake))]).to(logits.device)
        # A sum: the DP optimiser divides the noised sum by the expected batch size.
        F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").backward()
        private.step()
        d_real, d_fake = logits[:n_real].detach(), logits[n_real:].detach()
        loss = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        if n_real:
            loss = loss + F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        return loss, d_real, d_fake

    # -- watching, logging, saving -----------------------------------------------------
    def _log(self, speed: float) -> str:
        for unit in self.units:  # each rank saw its share of the batch: report the mean
            if unit.count:
                unit.sums = mean_over_ranks(unit.sums, self.ranks, self.device)
        self._check_finite()
        shown = []
        for unit in self.units:
            if not unit.count:
                continue
            means = {k: float(v) / unit.count for k, v in unit.sums.items()}
            record = {
                "step": self.global_step,
                "epoch": self.epoch + 1,
                "unit": unit.name,
                **{k: round(v, 5) for k, v in means.items()},
                "img_per_s": round(speed, 1),
                "train_s": round(self.elapsed, 1),
            }
            if unit.dp is not None:
                record["epsilon"] = round(unit.dp.epsilon(self.dp_delta), 4)
            if self.ranks.main:
                with open(self.metrics_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                writer = self._tensorboard()
                if writer is not None:
                    for key, value in means.items():
                        writer.add_scalar(f"{unit.name}/{key}", value, self.global_step)
                self._watch_balance(unit, means)
            shown.append(
                f"{unit.name[:10]} D {means['loss_d']:.2f} G {means['loss_g']:.2f} "
                f"D(x) {means['d_real']:.2f} D(G(z)) {means['d_fake']:.2f}"
            )
            unit.sums, unit.count = {}, 0
        text = " | ".join(shown) + f" | {speed:.0f} img/s"
        if self.dp_delta is not None:
            spent = max(u.dp.epsilon(self.dp_delta) for u in self.units)
            text += f" | eps {spent:.2f}/{self.config.dp_epsilon:g}"
        return text

    def _check_finite(self) -> None:
        bad = [
            f"{unit.name}: {key} is {float(value)}"
            for unit in self.units
            for key, value in unit.sums.items()
            if key in ("loss_d", "loss_g") and not math.isfinite(float(value))
        ]
        if any_rank([bool(bad)], self.ranks, self.device)[0]:  # every rank stops together
            raise Diverged(
                f"training diverged ({bad[0] if bad else 'in another process'}) at epoch "
                f"{self.epoch + 1}, step {self.global_step}; the last good checkpoint "
                f"is kept at {checkpoint_path(self.run_dir)}: lower --lr-g/--lr-d or "
                "use --precision fp32"
            )

    def _watch_balance(self, unit: Unit, means: dict[str, float]) -> None:
        if means["d_fake"] < D_WINS_AT and means["d_real"] > 1 - D_WINS_AT:
            unit.d_wins_steps += self.config.log_every_steps
            if unit.d_wins_steps == 20 * self.config.log_every_steps:
                log.warning(
                    "%s: the discriminator has won outright for %d steps "
                    "(D(x) %.3f, D(G(z)) %.3f): G gets no signal. Try DiffAugment "
                    "(--preset best), a lower --lr-d or more data.",
                    unit.name,
                    unit.d_wins_steps,
                    means["d_real"],
                    means["d_fake"],
                )
        else:
            unit.d_wins_steps = 0

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional: JSONL is always written
                self._writer = False
                return None
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer or None

    def _end_of_epoch(self) -> None:
        if not self.ranks.main:
            return
        grids = self.run_dir / "grids"
        for k, name in enumerate(self.classes):
            unit = self._unit_for(k)
            z = latents(self.config.seed, k, GRID_SIZE, self.config.z_dim)
            labels = torch.full((GRID_SIZE,), k) if unit.class_index is None else None
            images = generate(sampling_generator(unit), z, labels, self.device)
            save_grid(images, grids / name / f"epoch_{self.epoch:04d}.png")
            save_grid(images, grids / f"{name}.png")
            writer = self._tensorboard()
            if writer is not None:
                writer.add_images(f"{name}/samples", images[:16], self.epoch)
        every = self.config.metrics_every_epochs
        if every and self.epoch % every == 0 and self.epoch < self.config.epochs:
            from masksynth.metrics.gan_quality import evaluate_generators

            scores = evaluate_generators(
                self.prep_dir, "val", self.config.metrics_samples, self.units, self.device
            )
            with open(self.metrics_file, "a", encoding="utf-8") as handle:
                handle.write(
                    json.dumps(
                        {"step": self.global_step, "epoch": self.epoch, "split": "val", **scores}
                    )
                    + "\n"
                )

    def _unit_for(self, class_index: int) -> Unit:
        for unit in self.units:
            if unit.class_index in (None, class_index):
                return unit
        raise KeyError(class_index)

    def _average_buffers(self) -> None:
        """BatchNorm statistics to save or sample with: averaged over the processes, and the
        EMA generator's computed for its own weights (the live G's would not fit them)."""
        for unit in self.units:
            if unit.G_ema is not None:
                seed = derive_seed(self.config.seed, BATCHNORM, self.global_step)
                refresh_batchnorm(unit.G_ema, seed, self.device)
        modules = [u.G for u in self.units] + [u.D for u in self.units]
        average_buffers(modules + [u.G_ema for u in self.units if u.G_ema is not None], self.ranks)

    def _save(self, next_step: int) -> None:
        self._check_finite()
        self._average_buffers()
        rngs = gather(rng_state(), self.ranks)  # each rank's noise continues on resume
        if not self.ranks.main:
            return
        units = {}
        for unit in self.units:
            units[unit.name] = {
                "G": unit.G.state_dict(),
                "D": unit.D.state_dict(),
                "opt_g": unit.opt_g.state_dict(),
                "opt_d": unit.opt_d.state_dict(),
                **({"G_ema": unit.G_ema.state_dict()} if unit.G_ema is not None else {}),
            }
        save_checkpoint(
            checkpoint_path(self.run_dir),
            {
                "config": self.config.to_dict(),
                "prep_fingerprint": self.prep_fingerprint,
                "classes": self.classes,
                "unit_classes": {u.name: u.class_index for u in self.units},
                "epoch": self.epoch,
                "next_step": next_step,
                "global_step": self.global_step,
                "elapsed_s": self.elapsed,
                "rng": rngs[0],
                **({"rng_ranks": rngs} if self.ranks.on else {}),
                "units": units,
                **self._dp_state(),
            },
        )

    def _dp_state(self) -> dict:
        if self.dp_delta is None:
            return {}
        from masksynth.gan import dp

        return {"dp": dp.record(self.units, self.config, self.dp_delta, history=True)}


class _ImmediateInterrupt(KeyboardInterrupt):
    pass


class _DeferredInterrupt:
    """Ctrl-C takes effect between two steps, so the saved state is a consistent one.

    A second Ctrl-C interrupts at once (the last checkpoint is then the one kept).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise _ImmediateInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # Weights only: the EMA generator's BatchNorm statistics are its own (refresh_batchnorm).
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)


BATCHNORM_BATCHES, BATCHNORM_BATCH_SIZE = 8, 64


class _LatentsIn(torch.nn.Module):
    """G called with one (z, labels) pair, the single input swa_utils.update_bn passes on."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.G = G

    def forward(self, batch: tuple) -> torch.Tensor:
        return self.G(*batch)


@torch.no_grad()
def refresh_batchnorm(G: Generator, seed: int, device: torch.device | str = "cpu") -> None:
    """Recompute G's BatchNorm running statistics for its current weights.

    Cumulative averages over BATCHNORM_BATCHES batches of seeded latents (and random classes
    for a conditional G), through torch.optim.swa_utils.update_bn; the seed keeps resumed
    runs bit-exact and leaves the training RNG untouched.
    """
    n_classes = G.n_classes
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(BATCHNORM_BATCHES):
        z = torch.randn(BATCHNORM_BATCH_SIZE, G.z_dim, 1, 1, generator=generator)
        labels = (
            torch.randint(n_classes, (BATCHNORM_BATCH_SIZE,), generator=generator).to(device)
            if n_classes
            else None
        )
        batches.append([(z.to(device), labels)])
    torch.optim.swa_utils.update_bn(batches, _LatentsIn(G))
