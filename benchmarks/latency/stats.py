"""Statistics of latency samples: the numbers every latency report quotes.

Percentiles are taken on the *sorted* samples with linear interpolation between the two
closest ranks (Hyndman & Fan type 7, numpy's default ``"linear"`` method): for ``n`` sorted
samples ``x[0] <= ... <= x[n-1]`` the ``q``-th percentile sits at rank
``h = (n - 1) * q / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h)+1] - x[floor(h)])``.
The median is the 50th percentile under the same rule. Writing it out (instead of calling
``np.percentile``) keeps the definition in one visible place; the tests check both agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edge.errors import ConfigError


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted samples, type-7 interpolation.

    Raises:
        ConfigError: no samples, or ``q`` outside [0, 100].
    """
    n = len(sorted_samples)
    if n == 0:
        raise ConfigError("percentile of no samples: run at least one timed iteration")
    if not 0.0 <= q <= 100.0:
        raise ConfigError(f"percentile q must be in [0, 100], got {q}")
    rank = (n - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    return float(sorted_samples[low] + (rank - low) * (sorted_samples[high] - sorted_samples[low]))


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call latencies in milliseconds.

    Attributes:
        n: number of timed calls.
        median_ms, p90_ms, p99_ms: type-7 percentiles of the sorted samples.
        mean_ms, std_ms: arithmetic mean and sample standard deviation (ddof=1; 0 for n=1).
        min_ms, max_ms: extremes.
        items_per_call: images processed per call (the batch).
        throughput: items per second at the median latency (``items_per_call / median``).
    """

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    items_per_call: int
    throughput: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LatencyStats:
        return cls(**raw)


def summarize(samples_ms: Sequence[float], items_per_call: int = 1) -> LatencyStats:
    """Summarize latency samples (ms per call) of calls that each process ``items_per_call``.

    Raises:
        ConfigError: no samples, a negative or non-finite sample, or items_per_call < 1.
    """
    if items_per_call < 1:
        raise ConfigError(f"items_per_call must be >= 1, got {items_per_call}")
    values = sorted(float(s) for s in samples_ms)
    if not values:
        raise ConfigError("no latency samples: run at least one timed iteration")
    if values[0] < 0 or not math.isfinite(values[-1]):
        raise ConfigError("latency samples must be finite and >= 0 ms")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    median = percentile(values, 50)
    return LatencyStats(
        n=n,
        median_ms=median,
        p90_ms=percentile(values, 90),
        p99_ms=percentile(values, 99),
        mean_ms=mean,
        std_ms=std,
        min_ms=values[0],
        max_ms=values[-1],
        items_per_call=items_per_call,
        throughput=items_per_call * 1000.0 / median if median > 0 else math.inf,
    )
