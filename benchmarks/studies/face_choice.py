"""Which face of a multi-face LFW image is 'the' face changes LFW accuracy by ~0.8 pt.

The packs align the face nearest the image centre (LFW centres the labelled person). This
re-aligns the highest-scoring detection instead on the images where the two differ and
recomputes U-U 10-fold accuracy from the cached embeddings (run `main.py eval` first).

    python -m benchmarks.studies.face_choice sface mobilefacenet-tflite
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.datasets import open_lfw
from benchmarks.evaluate import _cache_path
from benchmarks.packs import load_pack
from edge import metrics
from edge.align import align
from edge.detect import create_detector
from edge.runtimes import load_model
from edge.zoo import resolve_model


def top_score_crops(pack) -> dict[int, np.ndarray]:
    """Crops of the top-scoring face where it is not the centred face the pack used."""
    source, _ = open_lfw()
    multi = [i for i, info in enumerate(pack.manifest["per_image"]) if info.get("faces", 1) > 1]
    source.preload([pack.keys[i] for i in multi])
    detector, out = create_detector("yunet"), {}
    for i in multi:
        image = source.read_image(pack.keys[i])
        top = max(detector.detect(image), key=lambda f: f.score)
        crop = align(image, top.landmarks, (112, 112))
        if np.abs(crop.astype(int) - np.asarray(pack.unmasked[i]).astype(int)).mean() > 2:
            out[i] = crop
    return out


def main(names: list[str]) -> None:
    pack = load_pack(progress=False)
    alternative = top_score_crops(pack)
    print(f"top-score face differs from the centred face on {len(alternative)} images")
    changed = sorted(alternative)
    for name in names:
        net = load_model(resolve_model(name))
        emb = np.load(_cache_path(net.card.sha256 + type(net).name, pack, "unmasked"))
        swapped = emb.copy()
        swapped[changed] = net.embed(np.stack([alternative[i] for i in changed]))
        for label, e in (("centred face", emb), ("top-score face", swapped)):
            r = metrics.ten_fold_accuracy((e[pack.idx_a] * e[pack.idx_b]).sum(1), pack.is_same, pack.fold)
            print(f"{name:22} {label:15} U-U {100 * r.mean:.2f} +- {100 * r.std:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["sface"])
