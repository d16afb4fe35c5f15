"""Did INT8 lose accuracy, or did a few pairs flip by chance? A paired comparison of two models.

Two models scored on the same pairs differ on only a few of them: on masked LFW an INT8 model
and its FP32 source flip 20-60 of 6,000 decisions, so a 0.1-point gate (6 pairs) read off two
separate 10-fold accuracies is mostly noise (measured: two NNCF calibrations of the same student
with the same cosine to FP32, 0.99674 and 0.99676, scored U-M 95.90 and 96.15). The paired
view counts the discordant pairs (the protocol's decision right for one model only), gives the
accuracy difference with its 95% interval (the paired-proportions standard error) and McNemar's
exact test. Each model's decisions are the 10-fold protocol's (``edge.metrics.fold_decisions``),
so the difference is exactly the difference of the two reported accuracies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from edge.metrics import fold_decisions

Z95 = 1.959964


@dataclass(frozen=True)
class PairedResult:
    """``candidate`` against ``reference`` on the same pairs.

    Attributes:
        pairs: pairs compared.
        reference_only: pairs only the reference decides right (the candidate's losses).
        candidate_only: pairs only the candidate decides right (its gains).
        difference: candidate accuracy minus reference accuracy (fraction of pairs).
        ci95: 95% interval of ``difference``.
        p_value: McNemar's exact two-sided test of "no difference".
    """

    pairs: int
    reference_only: int
    candidate_only: int
    difference: float
    ci95: tuple[float, float]
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_paired(reference_scores, candidate_scores, is_same, folds=10) -> PairedResult:
    """Compare two models' scores on the same pairs under the k-fold protocol.

    Raises:
        ValueError: the two score arrays differ in length (or as ``fold_decisions`` raises).
    """
    ref, cand = np.asarray(reference_scores), np.asarray(candidate_scores)
    if ref.shape != cand.shape:
        raise ValueError(f"score arrays differ in shape: {ref.shape} vs {cand.shape}; both models "
                         "must be scored on the same pairs")
    right_ref = fold_decisions(ref, is_same, folds)[0]
    right_cand = fold_decisions(cand, is_same, folds)[0]
    n = right_ref.size
    losses = int(np.sum(right_ref & ~right_cand))
    gains = int(np.sum(right_cand & ~right_ref))
    diff = (gains - losses) / n
    se = math.sqrt(max(gains + losses - (gains - losses) ** 2 / n, 0.0)) / n
    return PairedResult(n, losses, gains, diff, (diff - Z95 * se, diff + Z95 * se),
                        mcnemar_exact(losses, gains))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
