"""GAN training speed: masksynth's loop against the usual tutorial loop, in the same run.

Both train the paper's DCGAN (batch 128, 64 px, one D step on real and fake, then one G
step). The baseline is written the way the PyTorch DCGAN tutorial does it: ImageFolder
decoding and resizing the photos every epoch in 2 DataLoader workers, fp32, NCHW, eager.
masksynth trains from the prepared uint8 cache, channels_last, with bf16 autocast only
where the CPU computes bf16 natively. `compute_only` is the plain step on a random batch
already in memory (no data cost): the most any input pipeline could give. Prints one JSON
line; medians over --repeats.

    python benchmarks/gan_speed.py --data ../shared/datasets/face-mask --prep runs/prep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import batches, gan_step_seconds, result
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from masksynth.config import PrepareConfig, gan_config
from masksynth.data import load_split
from masksynth.data.prepare import prepare
from masksynth.device import autocast, cpu_has_native_bf16, pick_device, resolve_precision
from masksynth.distributed import Ranks
from masksynth.gan.loop import Trainer
from masksynth.gan.loss import Objective
from masksynth.gan.networks import Discriminator, Generator
from masksynth.gan.pair import build_pairs

BATCH = 128


def plain_step(G, D, opt_g, opt_d, real: torch.Tensor) -> None:
    """The tutorial's step: D on real and fake, then G through D (D not frozen)."""
    fake = G(torch.randn(len(real), 128, 1, 1, device=real.device))
    d_real, d_fake = D(real), D(fake.detach())
    loss_d = F.binary_cross_entropy_with_logits(
        d_real, torch.ones_like(d_real)
    ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    d_gen = D(fake)
    loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def _adam_pair(device: torch.device, memory_format=torch.contiguous_format):
    G = Generator().to(device, memory_format=memory_format)
    D = Discriminator().to(device, memory_format=memory_format)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4, betas=(0.5, 0.999))
    return G, D, opt_g, opt_d


def plain_loop(data_dir: Path, steps: int, device: torch.device) -> float:
    """img/s of the tutorial loop, decoding included (the time a user actually waits)."""
    tf = transforms.Compose(
        [
            transforms.Resize(64),
            transforms.CenterCrop(64),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(data_dir), transform=tf),
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        persistent_workers=False,
    )
    G, D, opt_g, opt_d = _adam_pair(device)
    done, started = 0, None
    for step, (real, _) in enumerate(batches(loader, steps + 1)):
        plain_step(G, D, opt_g, opt_d, real.to(device))
        if step == 0:  # the first batch pays worker start-up: leave it out
            started = time.perf_counter()
        else:
            done += len(real)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def masksynth_loop(prep_dir: Path, steps: int, device: torch.device, precision: str) -> float:
    """img/s of masksynth's own training step on the cached images."""
    data = load_split(prep_dir, "train", 64)
    config = gan_config("paper", device=str(device), precision=precision, final_metrics=False)
    # One paper-sized pair over all images (a single class holding every label): the
    # baseline's work.
    data = data._replace(labels=torch.zeros_like(data.labels), class_names=["all"])
    pairs = build_pairs(config, data.class_names, data.labels, device)
    trainer = Trainer(config, pairs, Objective(), data, device, precision, Path("."), Ranks())
    return steps * BATCH / gan_step_seconds(trainer, len(data.images), BATCH, steps)


def compute_only(steps: int, device: torch.device, precision: str) -> float:
    """img/s of the plain step on a random batch already in memory, laid out and cast as
    masksynth does (channels_last, its precision): the compute floor, no data cost at all."""
    G, D, opt_g, opt_d = _adam_pair(device, torch.channels_last)
    real = torch.rand(BATCH, 3, 64, 64, device=device).mul(2).sub(1)
    real = real.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        plain_step(G, D, opt_g, opt_d, real)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            plain_step(G, D, opt_g, opt_d, real)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    if not (args.prep / "prepare.json").is_file():
        prepare(args.data, args.prep, PrepareConfig(sizes=(64,)))
    precision = resolve_precision("auto", device)
    ours, plain, compute = [], [], []
    for _ in range(args.repeats):
        plain.append(plain_loop(args.data, args.steps, device))
        ours.append(masksynth_loop(args.prep, args.steps, device, precision))
        compute.append(compute_only(args.steps, device, precision))
    record = result(
        f"gan_train_{device.type}",
        "img/s",
        ours,
        plain,
        compute_only=compute,  # masksynth can pass it: its G step skips D's weight gradients
        precision=precision,
        cpu_native_bf16=cpu_has_native_bf16(),
        batch=BATCH,
        steps=args.steps,
    )
    print(json.dumps(record))


if __name__ == "__main__":
    main()
