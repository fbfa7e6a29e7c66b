"""Differentially private GAN training: DP-SGD on the discriminator, with Opacus parts.

Only D reads real images; G learns from D's outputs alone, so G and every image it makes
inherit D's guarantee (post-processing). Each D step takes a Poisson sample of the real
images (what the RDP accountant assumes) and runs it together with a fixed-size fake batch
through one hooked forward pass: every image's gradient, real or fake, is clipped to C, the
sum gets Gaussian noise once and is divided by the expected batch size; the accountant
charges the step once. Noise is not added a second time for the fakes (Opacus issue #418),
and one real image still moves the sum by at most C. The fakes are clipped too because an
unclipped fake gradient (norm ~20 at the start on the dev set) swamped the clipped real
ones (<= 1): D called everything fake and the generator collapsed at epsilon 10 (Opacus
PR #494 reports the same). Per-class pairs learn from disjoint images, so the run's
epsilon is the largest pair's (parallel composition).

Not covered: the training logs (losses and D(x) on real batches), which are not released.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from torch import nn

from masksynth.config import GanConfig
from masksynth.errors import MasksynthError
from masksynth.gan.loss import Objective
from masksynth.gan.pair import GanPair

log = logging.getLogger(__name__)

# Real images need no input gradient; PyTorch warns that the first layer's hook sees none.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")


def check(config: GanConfig) -> None:
    """User errors in the DP options of a run with --dp-epsilon set."""
    if config.dp_epsilon < 0:
        raise MasksynthError("--dp-epsilon must be >= 0 (0 = no differential privacy)")
    if config.d_norm not in ("batch", "group"):  # both become GroupNorm under DP
        raise MasksynthError(
            f"--dp-epsilon cannot be combined with --d-norm {config.d_norm} (a private D uses "
            "GroupNorm, whose per-sample gradients Opacus computes); keep --d-norm batch"
        )
    if config.ac_weight:
        raise MasksynthError(
            "--dp-epsilon cannot be combined with --ac-weight (the private D's step has no "
            "auxiliary classifier loss); set --ac-weight 0 --no-ac-twin --class-keep 1"
        )
    if not 0 <= config.dp_delta < 1:
        raise MasksynthError("--dp-delta must be in [0, 1) (0 = 1 / (10 x training images))")
    if config.dp_max_grad_norm <= 0:
        raise MasksynthError("--dp-max-grad-norm must be > 0")


class PrivateD:
    """The DP-SGD state of one discriminator: per-sample hooks, clip-and-noise, accountant."""

    def __init__(
        self,
        D: nn.Module,
        opt_d: torch.optim.Optimizer,
        *,
        sample_rate: float,
        noise_multiplier: float,
        planned_steps: int,
        max_grad_norm: float,
        batch_size: int,
        history: list = (),
    ) -> None:
        # The hooks live on D's own layers, so D is called as before (and saved as before).
        self.hooks = GradSampleModule(D, loss_reduction="sum")
        self.params = [p for p in D.parameters() if p.requires_grad]
        # 'mean' divides the noised sum by the *expected* batch size, as Poisson sampling needs.
        self.optimizer = DPOptimizer(
            opt_d,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=batch_size,
        )
        self.accountant = RDPAccountant()
        self.accountant.history = [tuple(h) for h in history]
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate))
        self.sample_rate, self.noise_multiplier = sample_rate, noise_multiplier
        self.planned_steps = planned_steps
        self._spent: tuple[int, float, float] | None = None  # (steps, delta, epsilon)

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.accountant.history)

    def epsilon(self, delta: float) -> float:
        # Remembered: the RDP sums take a good fraction of a second on two CPU cores.
        if self._spent is None or self._spent[:2] != (self.steps, delta):
            spent = self.accountant.get_epsilon(delta) if self.accountant.history else 0.0
            self._spent = (self.steps, delta, spent)
        return self._spent[2]

    def sample(self, indices: torch.Tensor) -> torch.Tensor:
        """Poisson sampling: each image joins the batch on its own with the sample rate."""
        return indices[torch.rand(len(indices), device=indices.device) < self.sample_rate]

    @contextlib.contextmanager
    def hooks_off(self):
        """For passes over fake images only: no per-sample gradients are recorded."""
        self.hooks.disable_hooks()
        try:
            yield
        finally:
            self.hooks.enable_hooks()

    @contextlib.contextmanager
    def generator_pass(self):
        """G's step: D is a fixed function of fake images (no hooks, no D gradients)."""
        for p in self.params:
            p.requires_grad_(False)
        try:
            with self.hooks_off():
                yield
        finally:
            for p in self.params:
                p.requires_grad_(True)

    def step(self) -> None:
        """Clip every recorded per-sample gradient, add noise once, take Adam's step."""
        for p in self.params:
            # Clip the very values that are summed, in fp32 even under bf16 autocast.
            p.grad_sample = p.grad_sample.float()
        self.optimizer.step()  # clip, sum, add noise, divide by batch size, account, Adam

    def state(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "planned_steps": self.planned_steps,
            "history": [list(h) for h in self.accountant.history],
        }


class PrivateObjective(Objective):
    """The paper's loss with DP-SGD on every pair's D (see the module's docstring)."""

    def __init__(
        self, pairs: list[GanPair], config: GanConfig, n_train: int, saved: dict | None = None
    ) -> None:
        """A new run plans its steps from --epochs and picks each pair's noise so that the
        plan spends exactly the target epsilon; a resumed run keeps its saved plan."""
        super().__init__("bce")  # G's step: the paper's loss (DP is on D's step)
        self.config = config
        if saved is not None:
            self.delta, plans = saved["delta"], saved["units"]
        else:
            self.delta = config.dp_delta or 1.0 / (10 * n_train)
            per_epoch = max(math.ceil(len(p.indices) / config.batch_size) for p in pairs)
            steps = config.epochs * per_epoch
            plans = {p.name: _plan(config, len(p.indices), steps, self.delta) for p in pairs}
        self.private = {
            p.name: PrivateD(
                p.D,
                p.opt_d,
                max_grad_norm=config.dp_max_grad_norm,
                batch_size=config.batch_size,
                **plans[p.name],
            )
            for p in pairs
        }

    def batch(self, pair, order, step, batch_size, ranks):
        """Every pair steps, on a Poisson sample (what the accountant assumes)."""
        batch = self.private[pair.name].sample(pair.indices)
        return batch, len(batch)

    def fakes(self, pair, n_real, labels, n_classes):
        # The fake batch must not depend on the private one: fixed size, random classes.
        n_fake = self.config.batch_size
        if labels is None:
            return n_fake, None
        return n_fake, torch.randint(n_classes, (n_fake,), device=labels.device)

    def discriminator_step(self, pair, real, labels, fake, fake_labels, augment, autocast):
        """Real and fake images in one hooked pass, all clipped, noised once."""
        private = self.private[pair.name]
        private.optimizer.zero_grad(set_to_none=True)
        n_real = len(real)
        images = torch.cat([augment(real), augment(fake.detach())])
        both = None if labels is None else torch.cat([labels, fake_labels])
        with autocast:
            logits = pair.D(images.contiguous(memory_format=torch.channels_last), both).float()
        targets = torch.cat([torch.ones(n_real), torch.zeros(len(fake))]).to(logits.device)
        # A sum: the DP optimiser divides the noised sum by the expected batch size.
        F.binary_cross_entropy_with_logits(logits, targets, reduction="sum").backward()
        private.step()
        d_real, d_fake = logits[:n_real].detach(), logits[n_real:].detach()
        loss = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        if n_real:
            loss = loss + F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        return loss, d_real, d_fake

    def generator_pass(self, pair):
        return self.private[pair.name].generator_pass()

    def epsilon(self) -> float:
        """The run's spent epsilon: the largest pair's (pairs learn from disjoint images)."""
        return max(p.epsilon(self.delta) for p in self.private.values())

    def stop_reason(self) -> str | None:
        """A DP run stops at the end of its plan: one more step would exceed the target."""
        if all(p.steps < p.planned_steps for p in self.private.values()):
            return None
        log.warning(
            "privacy budget spent (epsilon %.3f of %g after %d steps): stopping here, "
            "checkpoint saved; a DP run cannot train past the --epochs it was planned with",
            self.epsilon(),
            self.config.dp_epsilon,
            max(p.steps for p in self.private.values()),
        )
        return "privacy budget"

    def log_fields(self, pair):
        return {"epsilon": round(self.private[pair.name].epsilon(self.delta), 4)}

    def progress(self) -> str:
        return f" | eps {self.epsilon():.2f}/{self.config.dp_epsilon:g}"

    def checkpoint_state(self) -> dict:
        return {"dp": self.record(history=True)}

    def record(self, history: bool = False) -> dict:
        """The run's DP settings and spent epsilon, for gan.json and logs; with `history`,
        every pair's plan and accountant history too (for the checkpoint)."""
        spent = {name: p.epsilon(self.delta) for name, p in self.private.items()}
        worst = self.private[max(spent, key=spent.get)]
        result = {
            "epsilon": max(spent.values()),
            "target_epsilon": self.config.dp_epsilon,
            "delta": self.delta,
            "noise_multiplier": worst.noise_multiplier,
            "max_grad_norm": self.config.dp_max_grad_norm,
            "sample_rate": worst.sample_rate,
            "steps": worst.steps,
            "planned_steps": worst.planned_steps,
        }
        if history:
            result["units"] = {name: p.state() for name, p in self.private.items()}
        elif len(self.private) > 1:
            result["units"] = {
                name: {
                    "epsilon": spent[name],
                    "noise_multiplier": p.noise_multiplier,
                    "sample_rate": p.sample_rate,
                }
                for name, p in self.private.items()
            }
        return result


def _plan(config: GanConfig, n_images: int, steps: int, delta: float) -> dict:
    sample_rate = min(1.0, config.batch_size / n_images)
    with warnings.catch_warnings():  # the search tries noise levels whose best order is loose
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        sigma = get_noise_multiplier(
            target_epsilon=config.dp_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    return {"sample_rate": sample_rate, "noise_multiplier": sigma, "planned_steps": steps}
