"""A sampler for epochs shorter than the data set, sharded by rank like DistributedSampler.

On slow hardware a pass over 19,000 faces can take hours; checkpoints, validation and the
per-epoch evaluation want a shorter rhythm. Epoch ``e`` takes slice ``e % k`` of permutation
``e // k`` of all rows (``k`` slices per permutation), so every face is seen once per ``k``
epochs, and the order depends only on (seed, epoch): the same for any world size and after
a resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from edge.errors import ConfigError


class EpochSampler(Sampler[int]):
    """``samples`` indices of ``range(size)`` per epoch, this rank's share of them.

    Args:
        size: dataset length.
        samples: indices per epoch over all ranks (at most ``size``).
        seed: permutation seed.
        rank, world_size: this process's shard (rank-strided, as DistributedSampler does).

    Raises:
        ConfigError: ``samples`` is not in 1..size.
    """

    def __init__(self, size: int, samples: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 1 <= samples <= size:
            raise ConfigError(f"data.samples_per_epoch must be in 1..{size} (the training faces), got {samples}")
        self.size, self.samples, self.seed = size, samples, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose slice ``__iter__`` yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        slices = self.size // self.samples
        permutation = np.random.default_rng((self.seed, self.epoch // slices)).permutation(self.size)
        start = (self.epoch % slices) * self.samples
        chosen = permutation[start:start + self.samples]
        chosen = chosen[: len(chosen) - len(chosen) % self.world_size]
        return iter(chosen[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.samples // self.world_size
