"""Training steps per second of each generator family at the `quick` recipe, in one run.

Issue 12 asks which family learns most in a time budget; what a family can learn in five
minutes is bounded by how many steps it gets. Each variant runs masksynth's own training
step (`Trainer.train_step`, one conditional G/D pair, batch 32, the preset's DiffAugment
and precision) on the prepared cache. The baseline is the `quick` DCGAN without class-wise
BatchNorm, so
`ratio` < 1 means fewer steps in the same budget. Prints one JSON line per variant.

    python benchmarks/gan_family_speed.py --prep runs/prep
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import gan_step_seconds, result

from masksynth.config import PrepareConfig, gan_config
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.device import cpu_has_native_bf16, pick_device, resolve_precision
from masksynth.distributed import Ranks
from masksynth.gan.loop import Trainer
from masksynth.gan.loss import Objective
from masksynth.gan.pair import build_pairs

PLAIN_ADAM = "dcgan_plain_adam"
# the projected discriminator has no class heads (quick's DCGAN has)
FASTGAN = {
    "family": "fastgan",
    "loss": "hinge",
    "g_class_norm": False,
    "ac_weight": 0.0,
    "ac_twin": False,
}
VARIANTS = {  # name: overrides of the quick preset
    "dcgan": {"g_class_norm": False},
    "dcgan_class_norm": {"g_class_norm": True},
    "fastgan_d64": {**FASTGAN, "d_input_size": 64},
    "fastgan_d128": {**FASTGAN, "d_input_size": 128},
    # the FastGAN generator at a quarter of quick's width against the DCGAN discriminator
    "fastgan_g8_dcgan_d": {"family": "fastgan", "discriminator": "dcgan", "g_width": 8},
    # quick's DCGAN with torch's default Adam (one weight at a time on the CPU), not the
    # fused kernel build_pairs takes
    PLAIN_ADAM: {},
}


def steps_per_second(
    prep_dir: Path, overrides: dict, steps: int, device: torch.device, plain_adam: bool = False
) -> float:
    data = load_split(prep_dir, "train", 64)
    config = gan_config("quick", device=str(device), final_metrics=False, **overrides)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(0)
    pairs = build_pairs(config, data.class_names, data.labels, device)
    if plain_adam:
        for pair in pairs:
            pair.opt_g = torch.optim.Adam(pair.G.parameters(), config.lr_g, config.betas)
            pair.opt_d = torch.optim.Adam(pair.D.parameters(), config.lr_d, config.betas)
    trainer = Trainer(
        config,
        pairs,
        Objective(config.loss, config.ac_weight, config.ac_twin),
        data,
        device,
        precision,
        Path("."),
        Ranks(),
    )
    return steps / gan_step_seconds(trainer, len(data.images), config.batch_size, steps, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    device = pick_device(args.device)
    if not (args.prep / "prepare.json").is_file():
        prepare(args.data, args.prep, PrepareConfig(sizes=(64,)))
    runs = {name: [] for name in args.only}
    baseline = []
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits all
        baseline.append(steps_per_second(args.prep, VARIANTS["dcgan"], args.steps, device))
        for name in args.only:
            if name != "dcgan":
                runs[name].append(
                    steps_per_second(
                        args.prep, VARIANTS[name], args.steps, device, name == PLAIN_ADAM
                    )
                )
    for name in args.only:
        record = result(
            f"gan_family_{name}_{device.type}",
            "steps/s",
            baseline if name == "dcgan" else runs[name],
            baseline,
            precision=resolve_precision("auto", device),
            cpu_native_bf16=cpu_has_native_bf16(),
            batch=gan_config("quick").batch_size,
            steps=args.steps,
        )
        print(json.dumps(record))


if __name__ == "__main__":
    main()
