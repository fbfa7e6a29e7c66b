"""How a G/D pair learns in one step: the paper's non-saturating loss (BCE with logits), or
the hinge loss (Lim & Ye 2017; Miyato et al. 2018) that projected discriminators train with.

`Objective` is the training loop's one strategy object: which real images a step takes,
how many fakes it makes, D's update and G's update. Differential privacy (`gan.dp`) is the
same interface with Poisson batches and DP-SGD on D, so the loop has no DP branches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from masksynth.distributed import Ranks
from masksynth.gan.pair import GanPair

Augment = Callable[[torch.Tensor], torch.Tensor]  # DiffAugment with the run's policy


LOSSES = ("bce", "hinge")


def d_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return F.binary_cross_entropy_with_logits(
        d_real, torch.ones_like(d_real)
    ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))


def g_loss(kind: str, d_gen: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return -d_gen.mean()
    return F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))


class Objective:
    """bce: D learns real vs fake by BCE, G against 'real' (non-saturating). hinge: D's
    margin loss, G raises D's score. With `ac_weight` > 0 (AC-GAN, Odena et al. 2017), D's
    auxiliary classifier learns the classes of the (augmented) reals, and G's loss adds its
    cross-entropy on the fakes against the classes they were made for: a second signal that
    the class must show. The classifier learns from reals only, so fakes cannot teach it.
    With `ac_twin` (TAC-GAN, Gong et al. 2019) a twin head learns the fakes' classes and G's
    loss subtracts its cross-entropy (same weight), which undoes AC-GAN's pull towards fakes
    that are easier to classify than the reals."""

    def __init__(self, loss: str = "bce", ac_weight: float = 0.0, ac_twin: bool = False) -> None:
        self.loss, self.ac_weight, self.ac_twin = loss, ac_weight, ac_twin
        # per pair: summed class-hit rates of D's classifier on reals and fakes, and steps
        self._class_hits: dict[str, list] = {}

    def batch(
        self, pair: GanPair, order: torch.Tensor, step: int, batch_size: int, ranks: Ranks
    ) -> tuple[torch.Tensor | None, int]:
        """This process's rows of the pair's step-th batch of `order` (None: skip the step),
        and how many images the whole batch holds."""
        batch = order[step * batch_size : (step + 1) * batch_size]
        if len(batch) < 2 * ranks.world:  # BatchNorm needs two samples on every rank
            return None, 0
        return ranks.shard(batch), len(batch)

    def fakes(
        self, pair: GanPair, n_real: int, labels: torch.Tensor | None, n_classes: int
    ) -> tuple[int, torch.Tensor | None]:
        """How many fakes the step makes, and their classes: as many as reals, alike."""
        return n_real, labels

    def discriminator_step(
        self, pair, real, labels, fake, fake_labels, augment: Augment, autocast
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """D's update; returns its loss and the real and fake logits (for the logs)."""
        with autocast:
            classes = self.ac_weight > 0
            d_real, heads_real = self._scores(pair.D_train, augment(real), labels, classes)
            d_fake, heads_fake = self._scores(
                pair.D_train, augment(fake.detach()), fake_labels, self.ac_twin
            )
            loss = d_loss(self.loss, d_real, d_fake)
            if heads_real is not None:  # the classifier learns the reals' classes
                loss = loss + self._class_loss(pair, "real", heads_real[:, 0], labels)
            if heads_fake is not None:  # its twin the fakes'
                loss = loss + self.ac_weight * F.cross_entropy(heads_fake[:, 1], fake_labels)
        pair.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        pair.opt_d.step()
        return loss, d_real, d_fake

    def generator_step(self, pair, fake, fake_labels, augment: Augment, autocast) -> torch.Tensor:
        """G's update through D. It needs D's input gradient only: backward(inputs=G's
        weights) skips D's weight gradients (a third of D's backward) and, under torchrun,
        D's all-reduce."""
        with self.generator_pass(pair):  # around the backward too: DP's hooks stay off
            with autocast:
                d_gen, heads = self._scores(pair.D, augment(fake), fake_labels, self.ac_weight > 0)
                loss = g_loss(self.loss, d_gen)
                if heads is not None:
                    loss = loss + self._class_loss(pair, "fake", heads[:, 0], fake_labels)
                if heads is not None and self.ac_twin:
                    loss = loss - self.ac_weight * F.cross_entropy(heads[:, 1], fake_labels)
            pair.opt_g.zero_grad(set_to_none=True)
            loss.backward(inputs=list(pair.G.parameters()))
            pair.opt_g.step()
        return loss

    def generator_pass(self, pair: GanPair):
        return contextlib.nullcontext()

    # -- the auxiliary classifier ------------------------------------------------------------
    @staticmethod
    def _scores(D, images, labels, with_classes) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's logits and, when asked, its class heads' logits (N, heads, classes)."""
        if not with_classes:
            return D(images, labels).float(), None
        logit, heads = D(images, labels, with_classes=True)
        return logit.float(), heads.float()

    def _class_loss(self, pair, kind, class_logits, labels) -> torch.Tensor:
        """The auxiliary classifier's weighted cross-entropy, its hits counted for the log."""
        hits = self._class_hits.setdefault(pair.name, [0.0, 0.0, 0])
        hit_rate = (class_logits.detach().argmax(1) == labels).float().mean()
        hits[0 if kind == "real" else 1] += hit_rate  # a tensor: no device sync per step
        hits[2] += kind == "fake"  # one D and one G step per training step
        return self.ac_weight * F.cross_entropy(class_logits, labels)

    # -- what a run records of its objective ------------------------------------------------
    def stop_reason(self) -> str | None:
        """Why training must stop before its planned end (None: it need not)."""
        return None

    def log_fields(self, pair: GanPair) -> dict:
        """With an auxiliary classifier: how often it named the class of this pair's reals
        and of its fakes since the last log line (this process's steps)."""
        real, fake, steps = self._class_hits.pop(pair.name, (0.0, 0.0, 0))
        if not steps:
            return {}
        return {"ac_real": round(float(real) / steps, 4), "ac_fake": round(float(fake) / steps, 4)}

    def progress(self) -> str:
        return ""

    def checkpoint_state(self) -> dict:
        return {}

    def record(self) -> dict | None:
        return None
