"""What would an INT8 model's error cost if it were plain noise? The loss to expect by chance.

A paired comparison (``benchmarks.paired``) says how many masked-LFW pairs an INT8 model
decides differently from its FP32 source; it cannot say whether INT8 lost them through a
systematic change or whether *any* error of that size would lose as many. Every INT8 model
moves each embedding a little, and a moved embedding flips the pairs that sat near the
threshold: on the hard sets (masked-vs-masked) more of them sit there, so even an unbiased
error costs accuracy there on average.

The noise floor measures that cost with the model's own errors: the INT8 embedding of face
``i`` minus its FP32 embedding is a residual ``r_i``; each draw gives every face the residual
of another face (a random permutation within unmasked and within masked faces), so the
errors keep their sizes and their preferred directions but lose any relation to the face
they land on, and the paired difference is recomputed. Over ``DRAWS`` draws this gives the
difference to expect from noise of this model's size (mean) and how far one draw scatters
(sd). A measured loss well below the floor (more than ``SD_MARGIN`` sd) is INT8 losing more
than its noise explains; one inside is what noise of this size costs.

Real student (2026-11-24, points): onnxruntime INT8 (mean cosine 0.996 to FP32) measured
M-M -0.12 against a floor of -0.15 +- 0.13 (noise of its size explains it) and U-U -0.13
against +0.02 +- 0.07 (it does not); OpenVINO INT8 (0.997) M-M +0.00, floor -0.09 +- 0.13.
At this cosine the floor on the hard set is about the 0.1-point gate itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from benchmarks.evaluate import pair_embeddings
from benchmarks.paired import compare_paired

DRAWS = 100  # the floor's mean is then known to about sd / 10
SD_MARGIN = 2.0  # a measured difference this many sd below the floor's mean is "beyond noise"


@dataclass(frozen=True)
class NoiseFloor:
    """The paired difference noise of a model's own size causes, on one set.

    Attributes:
        mean: expected accuracy difference (fraction of pairs; negative is a loss).
        sd: standard deviation of one draw.
        draws: permutations averaged.
    """

    mean: float
    sd: float
    draws: int

    def beyond(self, difference: float) -> bool:
        """True when ``difference`` is a larger loss than noise of this size explains."""
        return difference < self.mean - SD_MARGIN * self.sd

    def to_dict(self) -> dict:
        return asdict(self)


def noise_floor(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], pack,
                sets: tuple[str, ...] = ("U-U", "U-M", "M-M"), draws: int = DRAWS,
                seed: int = 0) -> dict[str, NoiseFloor]:
    """Expected paired difference, per set, if ``candidate``'s errors were noise.

    Args:
        reference, candidate: L2-normalised embeddings ``{"unmasked": (N, D), "masked": (N, D)}``
            of the pack's images by the FP32 and the INT8 model.
        pack: pairs (``idx_a``, ``idx_b``, ``is_same``, ``fold``), as ``benchmarks.packs.Pack``.
        draws: random permutations of the residuals.

    Raises:
        ValueError: the two models' embeddings differ in shape.
    """
    for which in reference:
        if reference[which].shape != candidate.get(which, np.empty(0)).shape:
            raise ValueError(f"{which} embeddings differ in shape: {reference[which].shape} vs "
                             f"{np.shape(candidate.get(which))}; embed the same pack with both models")
    rng = np.random.default_rng(seed)
    residual = {w: candidate[w] - reference[w] for w in sorted(reference)}  # fixed draw order
    base = {s: _scores(s, reference, pack) for s in sets}
    found = {s: [] for s in sets}
    for _ in range(draws):
        noisy = {w: _normalise(reference[w] + r[rng.permutation(len(r))]) for w, r in residual.items()}
        for s in sets:
            found[s].append(compare_paired(base[s], _scores(s, noisy, pack), pack.is_same,
                                           pack.fold).difference)
    return {s: NoiseFloor(float(np.mean(v)), float(np.std(v)), draws) for s, v in found.items()}


def _scores(name: str, emb: dict[str, np.ndarray], pack) -> np.ndarray:
    first, second = pair_embeddings(name, emb)
    return (first[pack.idx_a] * second[pack.idx_b]).sum(axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-10)
