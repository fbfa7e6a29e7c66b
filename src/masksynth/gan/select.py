"""Which fakes a run hands out: with `class_keep` q < 1, those its D's class head is surest of.

A generator trained for minutes draws some faces that show their class badly (a mask half
drawn, a chin that is neither skin nor cloth). The class head of an AC-GAN / TAC-GAN
discriminator (trained on the real photos' classes) scores each fake's class margin: its
class's logit less the log-sum-exp of the others'. A fake is kept when its margin reaches its
class's threshold, the (1 - q) quantile of the margins of a fixed calibration block of that
class's fakes, so about a share q of the candidates is kept. Like discriminator rejection
sampling (Azadi et al., ICLR 2019) it spends generator passes to hand out the fakes the
discriminator rates best; it ranks by the class head because D's real/fake logit did not pick
better faces here (README, "Choosing fakes by D's class head").

The verdict is a threshold on one image's margin (D in eval mode), not a rank within a batch:
whether a fake is kept depends on its latent alone, so a sample stays regenerable image by
image. Only the discriminator's training data (train split) shapes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from masksynth.gan.generate import generate, latents

CALIBRATION_SEED = 10_009  # the latents the thresholds are set on, apart from any `sample` seed
CALIBRATION_FAKES = 2000  # per class: the threshold's quantile to about 1 % of the share
BATCH = 250


@torch.no_grad()
def class_margins(
    discriminator: torch.nn.Module,
    images: torch.Tensor,
    class_index: int,
    conditional: bool,
    device: torch.device,
) -> torch.Tensor:
    """Per uint8 image: D's first class head's logit for `class_index` less the log-sum-exp
    of the other classes' logits (fp32, eval mode: one image's margin ignores the others)."""
    was_training = discriminator.training
    discriminator.eval()
    margins = []
    for start in range(0, len(images), BATCH):
        x = images[start : start + BATCH].to(device).float() / 127.5 - 1
        labels = torch.full((len(x),), class_index, device=device)
        _, heads = discriminator(x, labels if conditional else None, with_classes=True)
        logits = heads[:, 0].float()
        others = torch.cat([logits[:, :class_index], logits[:, class_index + 1 :]], dim=1)
        margins.append((logits[:, class_index] - others.logsumexp(dim=1)).cpu())
    discriminator.train(was_training)
    return torch.cat(margins) if margins else torch.zeros(0)


@dataclass
class ClassSelection:
    """Keeps a fake of class k when its class margin is at least `thresholds[k]`."""

    discriminator: torch.nn.Module
    conditional: bool  # D takes class labels (projection)
    keep: float  # the share of candidates kept
    device: torch.device
    thresholds: dict[int, float]

    def kept(self, images: torch.Tensor, class_index: int) -> torch.Tensor:
        """A bool per uint8 image of `class_index`: kept or not."""
        margins = class_margins(
            self.discriminator, images, class_index, self.conditional, self.device
        )
        return margins >= self.thresholds[class_index]

    def record(self, classes: list[str]) -> dict:
        return {
            "keep": self.keep,
            "by": "the margin of D's class head for the fake's class",
            "calibration": f"{CALIBRATION_FAKES} fakes per class on latent seed {CALIBRATION_SEED}",
            "thresholds": {classes[k]: round(t, 4) for k, t in sorted(self.thresholds.items())},
        }


def calibrate(
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    class_index: int,
    keep: float,
    z_dim: int,
    conditional: bool,
    device: torch.device,
) -> float:
    """The margin that about `keep` of this class's fakes reach, on the calibration latents."""
    z = latents(CALIBRATION_SEED, class_index, CALIBRATION_FAKES, z_dim)
    labels = torch.full((len(z),), class_index) if conditional else None
    images = generate(generator, z, labels, device)
    margins = class_margins(discriminator, images, class_index, conditional, device).numpy()
    return float(np.quantile(margins.astype(np.float64), 1 - keep))


def class_selection(
    pairs: dict[int, tuple[torch.nn.Module, torch.nn.Module, bool]],
    keep: float,
    z_dim: int,
    device: torch.device,
) -> ClassSelection | None:
    """The selection of `keep` of each class's fakes, from {class index: (G, D, conditional)};
    None when every fake is kept (keep 1)."""
    if keep >= 1:
        return None
    if keep <= 0:
        raise ValueError(f"class_keep must be in (0, 1], not {keep}")
    discriminators = {id(D) for _, D, _ in pairs.values()}
    if len(discriminators) != 1:  # per-class pairs have no class head (gan.train refuses)
        raise ValueError("selecting by class needs one conditional discriminator")
    _, D, conditional = next(iter(pairs.values()))
    thresholds = {
        k: calibrate(G, D, k, keep, z_dim, conditional, device) for k, (G, _, _) in pairs.items()
    }
    return ClassSelection(D, conditional, keep, device, thresholds)
