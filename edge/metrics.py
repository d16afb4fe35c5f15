"""Face-verification metrics: the LFW 10-fold protocol, ROC, EER, TAR@FAR, all-vs-all impostors.

numpy only: the door device calibrates its threshold with the same code as the benchmarks.

Conventions used throughout:

* scores are similarities (cosine): higher means "same person"; pass ``-distance`` for distances;
* a pair is accepted as "same" when ``score >= threshold``;
* FAR = accepted impostor pairs / impostor pairs, TAR = accepted genuine pairs / genuine pairs.

Impostor scores may be a plain array or a :class:`ScoreHistogram` (what
:func:`impostor_scores_all_vs_all` returns when the raw scores would exceed its memory cap).
With an array every result is exact; with a histogram thresholds snap to bin edges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.impostors import (DEFAULT_MAX_BYTES, ScoreHistogram,  # noqa: F401 (public API)
                            impostor_scores_all_vs_all)

logger = logging.getLogger(__name__)

DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
# Relative slack when turning a FAR into a count: 0.29 * 100 is 28.999999999999996 in floats.
_FAR_SLACK = 1e-9


@dataclass(frozen=True)
class FoldResult:
    """Outcome of the k-fold verification protocol (one entry per fold, in fold-label order)."""

    mean: float
    std: float  # population std (ddof=0), as insightface and facenet report it
    accuracies: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold, the TAR it gives and the FAR it actually reaches (<= the target)."""

    threshold: float
    tar: float
    far: float


def _scores(values, name: str) -> np.ndarray:
    """Return ``values`` as a finite 1-D float array, keeping float32 (large impostor sets)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _labels(is_same, size: int) -> np.ndarray:
    """Return ``is_same`` as a bool array of length ``size``."""
    arr = np.asarray(is_same)
    if arr.shape != (size,):
        raise ValueError(f"is_same has shape {arr.shape}, expected ({size},) like the scores")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError("is_same must hold booleans (or 0/1)")
    return arr.astype(bool)


def _count_ge(sorted_asc: np.ndarray, thresholds) -> np.ndarray:
    """Count values ``>= t`` in an ascending array for each threshold, exactly."""
    t = _as_dtype_ceil(np.asarray(thresholds, dtype=np.float64), sorted_asc)
    return sorted_asc.size - np.searchsorted(sorted_asc, t, side="left")


def _as_dtype_ceil(thresholds: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Thresholds in ``like``'s dtype, so 30M float32 scores are never upcast. Rounding *up*
    to a float32 keeps ``x >= t`` unchanged for every float32 ``x``; rounding down may not."""
    if like.dtype != np.float32:
        return thresholds
    t32 = thresholds.astype(np.float32)
    low = t32.astype(np.float64) < thresholds
    t32[low] = np.nextafter(t32[low], np.float32(np.inf))
    return t32


def best_threshold(scores, is_same) -> tuple[float, float]:
    """Find the threshold with the highest accuracy on ``scores``, exactly.

    Every distinct cut is tried: the midpoints between consecutive sorted unique scores, plus
    one just below the lowest (accept all) and one just above the highest (reject all). Ties
    in accuracy go to the lowest threshold.

    Args:
        scores: similarity per pair, shape (n,).
        is_same: True for genuine pairs, shape (n,).

    Returns:
        ``(threshold, accuracy)``.

    Raises:
        ValueError: shapes differ, empty input or non-finite scores.
    """
    s = _scores(scores, "scores").astype(np.float64)
    same = _labels(is_same, s.size)
    uniq, inv = np.unique(s, return_inverse=True)
    # Cut k accepts uniq[k:]: right are the genuine pairs at or above it, impostors below it.
    same_below = np.concatenate(([0], np.cumsum(np.bincount(inv[same], minlength=uniq.size))))
    diff_below = np.concatenate(([0], np.cumsum(np.bincount(inv[~same], minlength=uniq.size))))
    correct = (same_below[-1] - same_below) + diff_below
    k = int(np.argmax(correct))
    if k == 0:
        threshold = float(np.nextafter(uniq[0], -np.inf))
    elif k == uniq.size:
        threshold = float(np.nextafter(uniq[-1], np.inf))
    else:
        lo, hi = uniq[k - 1], uniq[k]
        threshold = float(lo + (hi - lo) / 2)
        if threshold <= lo:  # adjacent floats: the midpoint rounded onto the rejected side
            threshold = float(hi)
    return threshold, float(correct[k] / s.size)


def _fold_ids(folds, size: int) -> np.ndarray:
    """Return a fold label per pair: ``folds`` itself, or ``folds`` consecutive equal blocks."""
    if isinstance(folds, (int, np.integer)):
        if not 2 <= folds <= size:
            raise ValueError(f"need 2 <= folds <= number of pairs ({size}), got {folds}")
        return np.arange(size) * int(folds) // size
    ids = np.asarray(folds)
    if ids.shape != (size,) or ids.dtype.kind not in "iu":
        raise ValueError(f"folds must be an int or an integer array of shape ({size},)")
    if np.unique(ids).size < 2:
        raise ValueError("folds must name at least 2 distinct folds")
    return ids


def ten_fold_accuracy(scores, is_same, folds=10) -> FoldResult:
    """Run the LFW verification protocol (k-fold threshold selection).

    For each fold the threshold is the exact accuracy maximiser on all other folds
    (:func:`best_threshold`); the fold's accuracy is measured with it.

    Args:
        scores: similarity per pair, shape (n,).
        is_same: True for genuine pairs, shape (n,).
        folds: a fold label per pair (LFW ``pairs.txt`` order gives 10 consecutive blocks of
            600), or an int ``k`` meaning ``k`` consecutive equal blocks.

    Returns:
        A :class:`FoldResult` with mean, population std, per-fold accuracies and thresholds.

    Raises:
        ValueError: bad shapes, fewer than 2 folds, non-finite scores.
    """
    correct, ids, thresholds = fold_decisions(scores, is_same, folds)
    acc = np.asarray([correct[ids == fold].mean() for fold in np.unique(ids)])
    return FoldResult(float(acc.mean()), float(acc.std()), acc, thresholds)


def fold_decisions(scores, is_same, folds=10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: is the k-fold protocol's decision right? (Its threshold: from the other folds.)

    Returns:
        ``(correct, fold_ids, thresholds)``: a bool per pair, the fold label per pair, and one
        threshold per fold (in label order). Two models' ``correct`` on the same pairs can be
        compared pair by pair (``benchmarks.paired``).
    """
    s = _scores(scores, "scores").astype(np.float64)
    same = _labels(is_same, s.size)
    ids = _fold_ids(folds, s.size)
    correct = np.zeros(s.size, bool)
    thresholds = []
    for fold in np.unique(ids):
        test = ids == fold
        threshold, _ = best_threshold(s[~test], same[~test])
        correct[test] = (s[test] >= threshold) == same[test]
        thresholds.append(threshold)
    return correct, ids, np.asarray(thresholds)


def roc_curve(genuine, impostor, drop_intermediate: bool = True):
    """Exact ROC from the sorted scores (no threshold grid).

    Args:
        genuine: genuine-pair scores, shape (n_g,).
        impostor: impostor scores (array) or a :class:`ScoreHistogram`.
        drop_intermediate: keep only the corners of the step curve (thresholds at the genuine
            scores and at the impostor score just above each); the curve, its AUC and its EER
            are unchanged, but 30M impostors give ~2*n_g points instead of 30M.

    Returns:
        ``(far, tar, thresholds)``, thresholds descending from ``+inf`` (far = tar = 0).

    Raises:
        ValueError: empty or non-finite scores.
    """
    g = np.sort(_scores(genuine, "genuine"))
    if isinstance(impostor, ScoreHistogram):
        thr = impostor.edges[::-1]
        far = impostor.tail()[::-1] / max(impostor.total, 1)
    else:
        imp = np.sort(_scores(impostor, "impostor"))
        if drop_intermediate:
            above = np.searchsorted(imp, g, side="right")
            cand = np.concatenate((g, imp[above[above < imp.size]], imp[[0, -1]]))
        else:
            cand = np.concatenate((g, imp))
        thr = np.unique(cand.astype(np.float64))[::-1]
        far = _count_ge(imp, thr) / imp.size
    tar = _count_ge(g, thr) / g.size
    return (np.concatenate(([0.0], far)), np.concatenate(([0.0], tar)),
            np.concatenate(([np.inf], thr)))


def auc(far, tar) -> float:
    """Area under a ROC curve ``(far, tar)`` from :func:`roc_curve`, by the trapezoid rule
    (a tied genuine/impostor score counts half, as in the Mann-Whitney U statistic)."""
    far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def eer(far, tar) -> float:
    """Equal error rate of a ROC ``(far, tar)`` from :func:`roc_curve`: where FAR equals
    FRR (1 - TAR), linearly interpolated between the two ROC points around the crossing."""
    far, tar = np.asarray(far, dtype=np.float64), np.asarray(tar, dtype=np.float64)
    gap = (1.0 - tar) - far  # decreases from 1 at (0, 0) to -1 at (1, 1)
    k = int(np.argmax(gap <= 0))
    if k == 0:
        return float(far[0])
    step = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(far[k - 1] + step * (far[k] - far[k - 1]))


def _max_accepted(far: float, n: int) -> int:
    """Largest number of impostors a threshold may accept at FAR ``far`` among ``n``."""
    if not 0 <= far <= 1:
        raise ValueError(f"a FAR must lie in [0, 1], got {far}")
    k = int(np.floor(far * n * (1 + _FAR_SLACK)))
    if k == 0 and far > 0:
        logger.warning("target FAR %g is below 1/%d impostors: the threshold rejects all", far, n)
    return k


def _operating_points(impostor, fars) -> tuple[np.ndarray, np.ndarray]:
    """Lowest threshold per target FAR (see :func:`threshold_at_far`) and the FAR it reaches."""
    if isinstance(impostor, ScoreHistogram):
        tail, total = impostor.tail(), max(impostor.total, 1)
        idx = [int(np.argmax(tail <= _max_accepted(f, total))) for f in fars]
        return impostor.edges[idx], tail[idx] / total
    imp = _scores(impostor, "impostor")
    n = imp.size
    ks = [_max_accepted(f, n) for f in fars]
    # The (k+1)-th largest score must be rejected; a partial sort finds it in linear time.
    kth = sorted({n - 1 - k for k in ks if k < n})
    part = np.partition(imp, kth) if kth else imp
    thresholds = np.empty(len(ks), dtype=imp.dtype)
    for i, k in enumerate(ks):
        # Step up in the scores' own dtype: numpy compares float32 scores with a Python
        # float in float32 (NEP 50), where a float64 step would round back onto the score.
        thresholds[i] = imp.min() if k >= n else np.nextafter(part[n - 1 - k], np.inf,
                                                              dtype=imp.dtype)
    reached = np.array([np.count_nonzero(imp >= t) for t in thresholds]) / n
    return thresholds.astype(np.float64), reached


def threshold_at_far(impostor, far: float) -> float:
    """Lowest threshold whose FAR is at most ``far``.

    Exact for an array: just above the ``(floor(far*n)+1)``-th largest impostor score, so
    ties never push the FAR over the target. For a histogram: the lowest qualifying bin edge.

    Args:
        impostor: impostor scores (array) or a :class:`ScoreHistogram`.
        far: target false accept rate in [0, 1].

    Returns:
        The threshold (accept when ``score >= threshold``).

    Raises:
        ValueError: ``far`` outside [0, 1], empty or non-finite scores.
    """
    return float(_operating_points(impostor, [far])[0][0])


def tar_at_far(genuine, impostor, fars=DEFAULT_FARS) -> dict[float, OperatingPoint]:
    """TAR at each target FAR, with the threshold and the FAR actually reached.

    Args:
        genuine: genuine-pair scores, shape (n_g,).
        impostor: impostor scores (array) or a :class:`ScoreHistogram`.
        fars: target false accept rates.

    Returns:
        ``{target_far: OperatingPoint(threshold, tar, far)}``.

    Raises:
        ValueError: a FAR outside [0, 1], empty or non-finite scores.
    """
    g = np.sort(_scores(genuine, "genuine"))
    thresholds, reached = _operating_points(impostor, fars)
    tars = _count_ge(g, thresholds) / g.size
    return {float(f): OperatingPoint(float(t), float(r), float(a))
            for f, t, r, a in zip(fars, thresholds, tars, reached)}
