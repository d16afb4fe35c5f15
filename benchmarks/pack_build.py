"""The pixel work behind a pack: detect, align and mask every image, in worker processes.

Each image's mask is drawn from ``default_rng([seed, index])``, so the result does not
depend on how images are split over workers.

Workers are *spawned*, never forked: a caller that has already loaded torch, OpenVINO or
JAX holds threads and locks, and a forked child can wait forever on a lock whose owner
thread was not copied (this hung CI in the calibration build). The parent reads the
encoded bytes and sends them with each chunk, so workers need no open archive.
"""

from __future__ import annotations

import logging
import multiprocessing
from dataclasses import dataclass, field

import numpy as np

from benchmarks.datasets import ImageSource, decode_image
from edge.align import alignment_matrix, template, transform_points
from edge.errors import MaskEdgeError

log = logging.getLogger(__name__)
SIZE = (112, 112)
# Masks people wear at a door; the gas-mask template is left out of evaluation packs.
EVAL_STYLES = ("surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth")
_STATE: dict = {}  # per-process detector, renderer, seed and mode (set by _init_worker)
# Spawning a worker costs ~2 s (importing OpenCV and the detector); below this many images
# one process is faster.
MIN_IMAGES_PER_WORKER = 128


@dataclass
class RenderResult:
    unmasked: np.ndarray
    masked: np.ndarray
    landmarks: np.ndarray
    per_image: list[dict] = field(default_factory=list)


def render_images(source: ImageSource, keys: list[str], seed: int, workers: int = 2,
                  progress: bool = True, aligned: bool = False) -> RenderResult:
    """Align and mask every image in ``keys``; returns arrays in ``keys`` order."""
    n = len(keys)
    result = RenderResult(np.zeros((n, *SIZE, 3), np.uint8), np.zeros((n, *SIZE, 3), np.uint8),
                          np.zeros((n, 5, 2), np.float32), [{} for _ in range(n)])
    chunks = (_chunk(source, keys, start, min(start + 64, n)) for start in range(0, n, 64))
    workers = max(1, min(workers, n // MIN_IMAGES_PER_WORKER))
    bar = _progress(n, progress)
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(seed, aligned)) as pool:
            for done in pool.imap_unordered(_work, chunks):
                _collect(result, done, bar)
    else:
        _init_worker(seed, aligned)
        for chunk in chunks:
            _collect(result, _work(chunk), bar)
    bar.close()
    missed = sum(not info["detected"] for info in result.per_image)
    log.info("pack images: %d, no face found in %d (centre-crop fallback)", n, missed)
    return result


def _chunk(source: ImageSource, keys: list[str], start: int, stop: int) -> list:
    return [(i, keys[i], source.read_bytes(keys[i])) for i in range(start, stop)]


def _collect(result: RenderResult, done: list, bar) -> None:
    for i, crop, masked, points, info in done:
        result.unmasked[i], result.masked[i], result.landmarks[i] = crop, masked, points
        result.per_image[i] = info
    bar.update(len(done))


def _init_worker(seed: int, aligned: bool) -> None:
    import cv2

    from edge.detect import create_detector
    from edge.masks import MaskRenderer

    cv2.setNumThreads(1)  # one image per worker at a time; processes give the parallelism
    _STATE.update(seed=seed, aligned=aligned)
    if not aligned:
        _STATE["detector"] = create_detector("yunet")
    _STATE["renderer"] = MaskRenderer()


def _work(chunk: list[tuple[int, str, bytes]]) -> list:
    return [_one(i, key, data) for i, key, data in chunk]


def _one(i: int, key: str, data: bytes):
    from edge.align import align

    image = decode_image(data, key)
    points, info = _landmarks(image)
    matrix = alignment_matrix(points, SIZE)
    crop = align(image, points, SIZE)
    crop_points = transform_points(matrix, points).astype(np.float32)
    rng = np.random.default_rng([_STATE["seed"], i])
    try:
        style = str(rng.choice(EVAL_STYLES))
        masked, mask = _STATE["renderer"].render(crop, crop_points, rng, style=style)
        info.update(template=mask.template, view=mask.view, colour=mask.colour)
    except MaskEdgeError as err:  # implausible landmarks: keep the pair, record why
        masked = crop.copy()
        info.update(template=None, mask_error=str(err))
    return i, crop, masked, crop_points, info


def _landmarks(image: np.ndarray) -> tuple[np.ndarray, dict]:
    h, w = image.shape[:2]
    if _STATE.get("aligned"):
        return template((h, w)), {"detected": True, "aligned_input": True}
    faces = _STATE["detector"].detect(image)
    if not faces:
        # LFW-style crops are centred: fall back to the template scaled to the image.
        side = min(h, w) * 0.5
        pts = (template(SIZE) - 56.0) * side / 112.0 + np.array([w / 2, h / 2], np.float32)
        return pts.astype(np.float32), {"detected": False, "faces": 0}
    centre = np.array([w / 2, h / 2])
    # The labelled person is the centred face in LFW (777 pair images show more than one).
    face = min(faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - centre[0],
                                             f.box[1] + f.box[3] / 2 - centre[1]))
    return face.landmarks, {"detected": True, "faces": len(faces), "score": round(face.score, 4)}


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc="pack", unit="img", disable=not enabled)
    except ImportError:  # tqdm is a base dependency; this only guards odd installs
        class _Null:
            def update(self, _n): ...
            def close(self): ...
        return _Null()
