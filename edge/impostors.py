"""All-vs-all impostor scores in bounded memory, exact or as a fine histogram.

numpy only. ``edge.metrics`` re-exports these, so callers use ``edge.metrics`` alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# 256 MiB of float32 holds ~67M scores: both the ~30M same-set and the ~59M cross-set (U-M)
# impostors of the 7,701 LFW pair images, so the exact path is the default for LFW.
DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ScoreHistogram:
    """Impostor scores on a fine uniform grid: bin ``j`` holds ``[lo + j*w, lo + (j+1)*w)``."""

    counts: np.ndarray
    lo: float = -1.0
    width: float = 1e-4

    @property
    def total(self) -> int:
        """Number of scores binned."""
        return int(self.counts.sum())

    @property
    def edges(self) -> np.ndarray:
        """Bin edges, ascending, ``len(counts) + 1`` values."""
        return self.lo + self.width * np.arange(self.counts.size + 1)

    def tail(self) -> np.ndarray:
        """``tail[j]`` = number of scores ``>= edges[j]`` (exact at the edges)."""
        return np.concatenate((np.cumsum(self.counts[::-1])[::-1], [0]))


def _l2_normalise(emb, name: str) -> np.ndarray:
    """Return ``emb`` (n, d) as float32 rows of unit length."""
    arr = np.asarray(emb, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.isfinite(norms).all():
        raise ValueError(f"{name} holds all-zero or non-finite embeddings")
    return arr / norms


def _impostor_blocks(a, ia, b, ib, same_set: bool, chunk: int):
    """Yield the impostor scores block by block: rows ``a[s:e]`` against ``b``.

    In a single set only pairs ``i < j`` count, so each block starts at column ``s``.
    """
    for start in range(0, a.shape[0], chunk):
        end = min(start + chunk, a.shape[0])
        first = start if same_set else 0
        sims = a[start:end] @ b[first:].T
        mask = ia[start:end, None] != ib[None, first:]
        if same_set:
            mask &= np.arange(start, end)[:, None] < np.arange(first, b.shape[0])[None, :]
        yield sims[mask]


def impostor_scores_all_vs_all(emb_a, ids_a, emb_b=None, ids_b=None, *, chunk: int = 512,
                               max_bytes: int = DEFAULT_MAX_BYTES, bin_width: float = 1e-4):
    """Cosine scores of every cross-identity pair, computed in row blocks of bounded memory.

    Single set (``emb_b`` is None): all pairs ``i < j`` of ``emb_a`` with different ids.
    Cross set (U-M: ``emb_a`` unmasked, ``emb_b`` masked): all ``(i, j)`` with
    ``ids_a[i] != ids_b[j]``. The pair count is known up front, so the mode is chosen before
    any work: raw float32 scores if they fit in ``max_bytes`` (exact results downstream),
    else a :class:`ScoreHistogram` over [-1, 1] with ``bin_width`` bins (thresholds then
    resolve to ``bin_width``). Working memory is about ``30 * chunk * n_b`` bytes.

    Args:
        emb_a: embeddings (n_a, d); L2-normalised here.
        ids_a: identity label per row of ``emb_a`` (any comparable values).
        emb_b: optional second set (n_b, d) for cross-set impostors.
        ids_b: identity labels of ``emb_b`` (required with ``emb_b``).
        chunk: rows per block.
        max_bytes: cap on the raw float32 output; above it a histogram is returned.
        bin_width: histogram bin width.

    Returns:
        A float32 array of scores, or a :class:`ScoreHistogram`.

    Raises:
        ValueError: bad shapes, zero embeddings, ``emb_b`` without ``ids_b``, bad chunk.
    """
    same_set = emb_b is None
    a = _l2_normalise(emb_a, "emb_a")
    b = a if same_set else _l2_normalise(emb_b, "emb_b")
    if not same_set and (ids_b is None or b.shape[1] != a.shape[1]):
        raise ValueError("emb_b needs ids_b and the same embedding size as emb_a")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    ia, ib = _identity_codes(ids_a, ids_a if same_set else ids_b, a.shape[0], b.shape[0])
    total = _count_impostor_pairs(ia, ib, same_set)
    blocks = _impostor_blocks(a, ia, b, ib, same_set, chunk)
    if total * 4 > max_bytes:
        logger.info("all-vs-all: %d impostor pairs exceed %d bytes: histogram, bins of %g",
                    total, max_bytes, bin_width)
        return _histogram(blocks, bin_width)
    logger.info("all-vs-all: %d impostor pairs, kept exactly (%.0f MB)", total, total * 4e-6)
    out = np.empty(total, dtype=np.float32)
    pos = 0
    for block in blocks:
        out[pos:pos + block.size] = block
        pos += block.size
    return out


def _identity_codes(ids_a, ids_b, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Small integer codes for both label arrays: block masks become cheap comparisons."""
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    if ids_a.shape != (n_a,) or ids_b.shape != (n_b,):
        raise ValueError("ids_a / ids_b need one label per embedding row")
    _, codes = np.unique(np.concatenate((ids_a, ids_b)), return_inverse=True)
    return codes[:n_a], codes[n_a:]


def _histogram(blocks, bin_width: float) -> ScoreHistogram:
    """Bin score blocks on [-1, 1]; cosine rounding past +-1 lands in the end bins."""
    n_bins = int(round(2.0 / bin_width))
    counts = np.zeros(n_bins, dtype=np.int64)
    for block in blocks:
        idx = np.floor((block.astype(np.float64) + 1.0) / bin_width).astype(np.int64)
        counts += np.bincount(np.clip(idx, 0, n_bins - 1), minlength=n_bins)
    return ScoreHistogram(counts=counts, lo=-1.0, width=bin_width)


def _count_impostor_pairs(ia: np.ndarray, ib: np.ndarray, same_set: bool) -> int:
    """Number of cross-identity pairs, from the identity sizes alone."""
    n_ids = int(max(ia.max(), ib.max())) + 1
    ca = np.bincount(ia, minlength=n_ids).astype(np.int64)
    if same_set:
        n = ia.size
        return n * (n - 1) // 2 - int((ca * (ca - 1) // 2).sum())
    cb = np.bincount(ib, minlength=n_ids).astype(np.int64)
    return ia.size * ib.size - int((ca * cb).sum())
