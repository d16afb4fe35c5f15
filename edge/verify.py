"""Two photos in, one decision out: decode -> detect -> align -> embed -> score -> decide.

Each stage is timed, so `main.py verify` can show where the milliseconds go on a device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.detect import Face, FaceDetector
from edge.errors import NoFaceError
from edge.face import detect_and_align
from edge.image import read_image
from edge.runtimes import Runtime


@dataclass
class Timings:
    """Milliseconds per stage, summed over the images of one call."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + seconds * 1000.0

    def total(self) -> float:
        return sum(self.ms.values())


@dataclass(frozen=True)
class Verification:
    """Result of comparing the largest face of two photos."""

    faces: tuple[int, int]
    score: float
    threshold: float
    far: float
    same: bool
    timings: Timings


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.dot(a.ravel(), b.ravel()))


def embed_largest_face(
    path: str | Path, model: Runtime, detector: FaceDetector, timings: Timings
) -> tuple[np.ndarray, list[Face]]:
    """Embedding of the largest face in a photo, plus all faces found; stages timed.

    Raises:
        ImageError: the file cannot be decoded. NoFaceError: no face in it.
    """
    t0 = time.perf_counter()
    image = read_image(path)
    t1 = time.perf_counter()
    found = detect_and_align(image, detector, model.card.input.size, source=str(path))
    t2 = time.perf_counter()
    face, crop = max(found, key=lambda item: item[0].area)
    embedding = model.embed(crop[None])[0]
    t3 = time.perf_counter()
    timings.add("decode", t1 - t0)
    timings.add("detect+align", t2 - t1)
    timings.add("embed", t3 - t2)
    return embedding, [f for f, _ in found]


class Verifier:
    """Compares faces with one carded model and one detector.

    Args:
        model: an opened runtime (``edge.runtimes.load_model``).
        detector: a face detector with five landmarks.
        far: target false-accept rate; the card's threshold calibrated nearest to it is used.
    """

    def __init__(self, model: Runtime, detector: FaceDetector, far: float = 1e-3) -> None:
        self.model = model
        self.detector = detector
        self.threshold = model.card.threshold_at(far)

    def verify(self, a: str | Path, b: str | Path) -> Verification:
        """Decide whether the largest faces of photos ``a`` and ``b`` are the same person."""
        timings = Timings()
        emb_a, faces_a = embed_largest_face(a, self.model, self.detector, timings)
        emb_b, faces_b = embed_largest_face(b, self.model, self.detector, timings)
        t0 = time.perf_counter()
        score = cosine(emb_a, emb_b)
        timings.add("match", time.perf_counter() - t0)
        return Verification(
            faces=(len(faces_a), len(faces_b)),
            score=score,
            threshold=self.threshold.cosine,
            far=self.threshold.far,
            same=score >= self.threshold.cosine,
            timings=timings,
        )


__all__ = ["NoFaceError", "Timings", "Verification", "Verifier", "cosine", "embed_largest_face"]
