"""Several processes through torchrun: DistributedDataParallel with one process per device.

Under `torchrun --nproc-per-node N masksynth train-gan|train-classifier ...` every
process trains on its share of each batch and DDP averages the gradients, so the global
batch, and with it the recipe, stays what the config says. Rank 0 alone writes files.
Without torchrun (WORLD_SIZE unset or 1) nothing here changes a run.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from masksynth.device import pick_device
from masksynth.errors import MasksynthError

# Rank 0 may evaluate FID or write a checkpoint while the others wait at the next collective.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch (every rank sees the same global order)."""
        return batch[self.rank :: self.world] if self.on else batch


SINGLE = Ranks()


def setup(requested_device: str) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group when there is one; the device of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, pick_device(requested_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise MasksynthError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "lower --nproc-per-node or use --device cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=TIMEOUT,
        )
    if rank != 0:  # one voice: the other ranks report warnings and errors only
        logging.getLogger("masksynth").setLevel(logging.WARNING)
    return Ranks(rank, world), device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, ranks: Ranks, device: torch.device, **options):
    """DDP around module (the module itself when there is one process)."""
    if not ranks.on:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, **options)


def any_rank(flags: list[bool], ranks: Ranks, device: torch.device) -> list[bool]:
    """Each flag true on every rank when it is true on one (stop requests, time limits)."""
    if not ranks.on:
        return list(flags)
    values = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def min_over_ranks(value: int, ranks: Ranks, device: torch.device) -> int:
    """The smallest of every rank's value (a plan all ranks can keep to)."""
    if not ranks.on:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def mean_over_ranks(values: dict, ranks: Ranks, device: torch.device) -> dict:
    """Averages of logged numbers over the ranks (each saw its share of the batch)."""
    if not ranks.on or not values:
        return values
    keys = sorted(values)
    stacked = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(stacked)
    return {k: stacked[i] / ranks.world for i, k in enumerate(keys)}


def gather(obj, ranks: Ranks) -> list:
    """obj of every rank, in rank order (on every rank)."""
    if not ranks.on:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ranks: Ranks) -> None:
    if ranks.on:
        dist.barrier()


def average_buffers(modules: list[torch.nn.Module], ranks: Ranks) -> None:
    """BatchNorm running statistics averaged over the ranks (each kept its shard's).

    They only serve evaluation, so training is unchanged; every rank ends identical.
    """
    if not ranks.on:
        return
    for module in modules:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(ranks.world)


def check_in_sync(modules: dict[str, torch.nn.Module], ranks: Ranks) -> None:
    """Fail loudly if the ranks' weights differ: their gradients were not all averaged."""
    if not ranks.on:
        return
    sums = {
        name: float(sum(t.detach().double().sum() for t in [*m.parameters(), *m.buffers()]))
        for name, m in modules.items()
    }
    everyone = gather(sums, ranks)
    differ = [name for name in sums if any(other[name] != sums[name] for other in everyone)]
    if differ:
        raise MasksynthError(f"the {ranks.world} processes ended with different weights: {differ}")
