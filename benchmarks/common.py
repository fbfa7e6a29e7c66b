"""The one result record every benchmark prints: medians, the plain baseline and their ratio."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Iterator


def result(name: str, unit: str, ours: list[float], plain: list[float] | None, **extra) -> dict:
    """A benchmark's record (value/baseline are medians over the repeats in `runs`)."""
    value = statistics.median(ours)
    baseline = statistics.median(plain) if plain else None
    runs = {"masksynth": ours, **({"plain": plain} if plain else {})}
    if "compute_only" in extra:  # the plain step with no data cost: what a pipeline can reach
        compute = extra.pop("compute_only")
        runs["compute_only"] = compute
        extra = {
            "compute_only": round(statistics.median(compute), 1),
            "ceiling_ratio": round(statistics.median(compute) / baseline, 2) if baseline else None,
            **extra,
        }
    return {
        "name": name,
        "value": round(value, 1),
        "unit": unit,
        "baseline": round(baseline, 1) if baseline else None,
        "ratio": round(value / baseline, 2) if baseline else None,
        **extra,
        "repeats": len(ours),
        "runs": runs,
    }


def batches(loader: Iterable, n: int) -> Iterator:
    """n batches of the loader, epoch after epoch (a new epoch decodes every photo again)."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), n)


def gan_step_seconds(trainer, n_images: int, batch: int, steps: int, warmup: int = 1) -> float:
    """Seconds for `steps` of masksynth's GAN training step (the trainer's first pair) on
    seeded random batches of the cached images, after `warmup` untimed steps."""
    import time

    import torch

    device, pair = trainer.device, trainer.pairs[0]
    generator = torch.Generator().manual_seed(0)
    batches = [
        torch.randperm(n_images, generator=generator)[:batch].to(device)
        for _ in range(steps + warmup)
    ]
    for rows in batches[:warmup]:  # kernel selection, allocator
        trainer.train_step(pair, rows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for rows in batches[warmup:]:
        trainer.train_step(pair, rows)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started
