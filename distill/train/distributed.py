"""DDP set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, NCCL on
CUDA. Nothing happens at import: ``init_distributed`` is called inside ``main()``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from edge.errors import ConfigError

# Rank 0 may prepare data and teacher templates while the others wait at a barrier.
TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, writes checkpoints and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (a no-op for a single process).

    Raises:
        ConfigError: ``device`` is ``cuda`` and no GPU is visible.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device is cuda but no CUDA GPU is visible: use --device cpu")
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    else:
        target = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    return DistInfo(rank, world, local, target)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op alone)."""
    if info.distributed:
        dist.barrier()


def mean_across(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (each rank passes the same keys)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                          device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return {k: float(v) / info.world_size for k, v in zip(keys, tensor.tolist())}


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
