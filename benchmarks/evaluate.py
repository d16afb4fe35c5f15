"""The masked-LFW verification protocol for any embedder.

Three sets over the same 6,000 pairs: U-U (both unmasked), U-M (first unmasked, second
masked: a gallery photo against a masked probe) and M-M (both masked). Per set: LFW 10-fold
accuracy (threshold chosen on 9 folds, applied to the 10th), and ROC / AUC / EER / TAR at
FAR 1e-2, 1e-3, 1e-4 with the listed genuine pairs against *all* cross-identity pairs of the
pack's images (about 30 million for U-U), so that low FARs rest on enough impostors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from benchmarks.packs import Pack
from edge import metrics
from edge.errors import ConfigError

log = logging.getLogger(__name__)
SETS = ("U-U", "U-M", "M-M")
FARS = (1e-2, 1e-3, 1e-4)
EmbedFn = Callable[[np.ndarray], np.ndarray]


def embed_pack(embed_fn: EmbedFn, pack: Pack, which: str, batch: int = 64,
               progress: bool = True, indices: np.ndarray | None = None) -> np.ndarray:
    """L2-normalised embeddings of the pack's ``which`` ('unmasked'|'masked') crops."""
    from tqdm import tqdm

    crops = getattr(pack, which)
    order = np.arange(len(pack)) if indices is None else indices
    rows = []
    for start in tqdm(range(0, len(order), batch), desc=f"embed {which}", unit="batch",
                      disable=not progress, leave=False):
        rows.append(np.asarray(embed_fn(np.asarray(crops[order[start:start + batch]])), np.float32))
    emb = np.concatenate(rows)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-10)


def evaluate_embedder(embed_fn: EmbedFn, pack: Pack, sets=SETS, quick: bool = False,
                      cache: str | None = None, progress: bool = True,
                      keep_embeddings: bool = False) -> dict:
    """Run the protocol; returns ``{set: figures}`` plus timing.

    Args:
        embed_fn: uint8 BGR crops (N, 112, 112, 3) -> (N, D) embeddings.
        pack: from ``benchmarks.packs.load_pack``.
        sets: any of 'U-U', 'U-M', 'M-M'.
        quick: folds 1-2 only (1,200 pairs) and no all-vs-all impostors: for per-epoch checks.
        cache: a key (e.g. the model's sha256) to cache embeddings per (model, pack).
        keep_embeddings: also return them, as ``_embeddings`` (``{"unmasked"|"masked": (N, D)}``).

    Raises:
        ConfigError: an unknown set name.
    """
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise ConfigError(f"unknown evaluation set(s) {unknown}; valid sets: {', '.join(SETS)}")
    t0 = time.perf_counter()
    emb = _embeddings(embed_fn, pack, sets, quick, cache, progress)
    t1 = time.perf_counter()
    keep = np.isin(pack.fold, (0, 1)) if quick else np.ones(len(pack.fold), bool)
    results = {name: _one_set(name, emb, pack, keep, quick) for name in sets}
    results["timing_s"] = {"embed": round(t1 - t0, 2), "protocol": round(time.perf_counter() - t1, 2)}
    results["pairs"] = int(keep.sum())
    if keep_embeddings:
        results["_embeddings"] = emb
    return results


def _embeddings(embed_fn, pack, sets, quick, cache, progress) -> dict[str, np.ndarray]:
    need = {"unmasked"} if "U-U" in sets else set()
    need |= {"unmasked", "masked"} if "U-M" in sets else set()
    need |= {"masked"} if "M-M" in sets else set()
    out = {}
    for which in sorted(need):
        path = _cache_path(cache, pack, which) if cache and not quick else None
        if path is not None and path.is_file():
            out[which] = np.load(path)
            continue
        indices = _quick_indices(pack) if quick else None
        emb = embed_pack(embed_fn, pack, which, progress=progress, indices=indices)
        if indices is not None:  # scatter back so pair indices still work
            full = np.zeros((len(pack), emb.shape[1]), np.float32)
            full[indices] = emb
            emb = full
        if path is not None:
            np.save(path, emb)
        out[which] = emb
    return out


def _quick_indices(pack: Pack) -> np.ndarray:
    keep = np.isin(pack.fold, (0, 1))
    return np.unique(np.concatenate([pack.idx_a[keep], pack.idx_b[keep]]))


def _cache_path(cache: str, pack: Pack, which: str):
    """Embedding cache file for a (model sha256 + runtime) key and a pack."""
    import hashlib

    from edge.paths import cache_dir

    name = hashlib.sha256(cache.encode()).hexdigest()[:16]  # the runtime is part of the key
    return cache_dir("embeddings") / f"{name}-{pack.key}-{which}.npy"


def pair_embeddings(name: str, emb: dict) -> tuple[np.ndarray, np.ndarray]:
    """The (first, second) image embeddings of set ``name``'s pairs: masked or unmasked."""
    first = emb["masked"] if name == "M-M" else emb["unmasked"]
    second = emb["unmasked"] if name == "U-U" else emb["masked"]
    return first, second


def _one_set(name: str, emb: dict, pack: Pack, keep: np.ndarray, quick: bool) -> dict:
    first, second = pair_embeddings(name, emb)
    a, b = pack.idx_a[keep], pack.idx_b[keep]
    scores = (first[a] * second[b]).sum(axis=1)
    same, folds = pack.is_same[keep], pack.fold[keep]
    tenfold = metrics.ten_fold_accuracy(scores, same, folds)
    out = {
        "accuracy": round(float(tenfold.mean), 6),
        "accuracy_std": round(float(tenfold.std), 6),
        "fold_accuracies": [round(float(x), 6) for x in tenfold.accuracies],
        "threshold_mean": round(float(np.mean(tenfold.thresholds)), 6),
    }
    if quick:
        return out
    genuine = scores[same]
    if name == "U-M":  # gallery unmasked vs probe masked: every cross-identity (i, j)
        impostor = metrics.impostor_scores_all_vs_all(first, pack.ids, second, pack.ids)
    else:
        impostor = metrics.impostor_scores_all_vs_all(first, pack.ids)
    far, tar, _ = metrics.roc_curve(genuine, impostor)
    points = metrics.tar_at_far(genuine, impostor, FARS)
    out.update(
        auc=round(float(metrics.auc(far, tar)), 6),
        eer=round(float(metrics.eer(far, tar)), 6),
        tar_at_far={f"{f:g}": {"tar": round(p.tar, 6), "threshold": round(p.threshold, 6),
                               "far": p.far} for f, p in points.items()},
        n_genuine=int(genuine.size),
        n_impostor=int(getattr(impostor, "total", np.size(impostor))),
    )
    # Per-pair scores (pack order) for paired comparisons of two models (benchmarks.paired).
    out["_curves"] = {"far": far, "tar": tar, "genuine": genuine, "impostor": impostor,
                      "scores": scores}
    return out
