"""End-to-end door pipeline and gallery search cost.

``bench_pipeline`` plays a clip (``video.make_door_clip``) through
decode -> detect -> align -> embed -> match and times every stage per frame; frames/s is
frames over the summed per-frame wall time. Threads apply to the embedding runtime and to
OpenCV (``cv2.setNumThreads``, which YuNet-through-OpenCV uses), restored afterwards.

``bench_gallery`` times a 1:N search (matrix-vector product of an (N, D) float32 matrix of
unit templates with one probe, then top-1/top-2 by ``argpartition``) for N = 1e2..1e6 and
notes the gallery's memory. BLAS threads are limited with ``threadpoolctl`` when installed;
the record says whether they were.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import cv2
import numpy as np

from benchmarks.latency.stats import summarize
from benchmarks.latency.video import DoorClip
from edge.errors import DatasetError, NoFaceError

log = logging.getLogger(__name__)

STAGES = ("decode", "detect", "align", "embed", "match")
GALLERY_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)


def bench_pipeline(clip: DoorClip, model: str = "sface", runtime: str | None = None,
                   threads: int = 1, warmup: int = 5) -> dict[str, Any]:
    """Run the clip through the whole pipeline; return a ``kind="pipeline"`` record.

    Raises:
        DatasetError: the clip cannot be opened. MaskEdgeError: model or detector problems.
    """
    from edge.detect import create_detector
    from edge.runtimes import load_model, runtime_for_suffix
    from edge.zoo import resolve_model

    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        path = resolve_model(model)
        net = load_model(path, runtime=runtime, threads=threads)
        detector = create_detector("yunet", order="size")
        names, gallery = _enrol(clip, net, detector)
        _play(clip, net, detector, gallery, names, limit=warmup)
        times, found, correct = _play(clip, net, detector, gallery, names)
    finally:
        cv2.setNumThreads(previous)
    totals = [sum(t[s] for s in STAGES) for t in times]
    return {
        "kind": "pipeline",
        "model": net.card.name, "precision": net.card.precision,
        "runtime": runtime or runtime_for_suffix(path), "threads": threads,
        "detector": repr(detector),
        "video": {"file": clip.path.name, "size": list(clip.size), "codec": "MJPG", "frames": len(times)},
        "gallery_size": len(names),
        "faces_found": found, "top1_correct": correct,
        "fps": len(times) / (sum(totals) / 1e3),
        "stages": {s: summarize([t[s] for t in times]).to_dict() for s in STAGES},
        "total": summarize(totals).to_dict(),
    }


def _enrol(clip: DoorClip, net, detector) -> tuple[list[str], np.ndarray]:
    from edge.face import detect_and_align

    names, rows = [], []
    for name, jpeg in clip.enrol.items():
        try:
            face, crop = detect_and_align(jpeg, detector, net.card.input.size, max_faces=1)[0]
        except NoFaceError:
            log.warning("no face in the enrolment photo of %s; not enrolled", name)
            continue
        names.append(name)
        rows.append(net.embed(crop[None])[0])
    return names, np.stack(rows)


def _play(clip: DoorClip, net, detector, gallery: np.ndarray, names: list[str],
          limit: int | None = None) -> tuple[list[dict[str, float]], int, int]:
    from edge.align import align

    capture = cv2.VideoCapture(str(clip.path))
    if not capture.isOpened():
        raise DatasetError(f"OpenCV cannot open {clip.path}: re-create the clip")
    times, found, correct = [], 0, 0
    try:
        for index, truth in enumerate(clip.truth[:limit]):
            t = {s: 0.0 for s in STAGES}
            t0 = time.perf_counter()
            ok, frame = capture.read()
            t1 = time.perf_counter()
            if not ok:
                raise DatasetError(f"{clip.path} ended at frame {index}, expected {len(clip.truth)}")
            faces = detector.detect(frame)
            t2 = time.perf_counter()
            t.update(decode=t1 - t0, detect=t2 - t1)
            if faces:
                crop = align(frame, faces[0].landmarks, net.card.input.size)
                t3 = time.perf_counter()
                emb = net.embed(crop[None])[0]
                t4 = time.perf_counter()
                best = top2(gallery, emb)[0]
                t5 = time.perf_counter()
                t.update(align=t3 - t2, embed=t4 - t3, match=t5 - t4)
                found += 1
                correct += names[best] == truth
            times.append({s: v * 1e3 for s, v in t.items()})
    finally:
        capture.release()
    return times, found, correct


def top2(gallery: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Indices of the two best-matching rows (cosine, rows unit-norm), best first."""
    scores = gallery @ probe
    if len(scores) <= 2:
        return np.argsort(-scores)
    best = np.argpartition(-scores, 2)[:2]
    return best[np.argsort(-scores[best])]


def random_gallery(size: int, dim: int = 128, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """(size, dim) float32 random unit vectors, made in chunks to bound temporary memory."""
    rng = np.random.default_rng(seed)
    gallery = np.empty((size, dim), np.float32)
    for start in range(0, size, chunk):
        block = rng.standard_normal((min(chunk, size - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        gallery[start : start + len(block)] = block
    return gallery


def bench_gallery(sizes: tuple[int, ...] = GALLERY_SIZES, dim: int = 128, threads: int = 1,
                  queries: int = 50, min_seconds: float = 0.5, seed: int = 0) -> list[dict[str, Any]]:
    """Time top-1/top-2 search per probe for each gallery size; one record per size."""
    records = []
    limited, limit = _blas_threads(threads)
    with limit:
        for size in sizes:
            gallery = random_gallery(size, dim, seed)
            probes = random_gallery(queries, dim, seed + 1)
            for probe in probes[:3]:  # warm-up: page the matrix in
                top2(gallery, probe)
            samples, start = [], time.perf_counter()
            while len(samples) < queries or time.perf_counter() - start < min_seconds:
                probe = probes[len(samples) % queries]
                t0 = time.perf_counter()
                top2(gallery, probe)
                samples.append((time.perf_counter() - t0) * 1e3)
            records.append({"kind": "gallery", "size": size, "dim": dim, "dtype": "float32",
                            "memory_mb": gallery.nbytes / 2**20, "threads": threads,
                            "blas_threads_limited": limited, "stats": summarize(samples).to_dict()})
            del gallery
    return records


def _blas_threads(threads: int) -> tuple[bool, contextlib.AbstractContextManager]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: gallery search uses the BLAS default threads")
        return False, contextlib.nullcontext()
    return True, threadpool_limits(limits=threads, user_api="blas")
