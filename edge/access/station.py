"""The door loop: detect -> quality gate -> align -> embed -> decide -> audit, per frame.

Headless by default; an annotated video (boxes, names, scores) is written only when asked.
Latency is measured per frame from the start of detection to the last decision, so it is
what a person standing at the door waits for (the audit write is not included).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.access.audit import AuditContext, AuditLog
from edge.access.decide import Decider, Decision
from edge.access.errors import GalleryModelError
from edge.access.gallery import Gallery
from edge.access.quality import QualityConfig, QualityReport, check_crop, check_face
from edge.access.sources import FrameSource
from edge.align import align
from edge.detect import Face, FaceDetector
from edge.errors import ConfigError
from edge.runtimes.base import Runtime

log = logging.getLogger(__name__)

_FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}

# The detector canvas for a door camera: a 640x480 frame fits at scale 0.5 (YuNet wants
# multiples of 32). It costs a fifth of the default 640x640 canvas, and faces the quality
# gate accepts (>= 40 px in the frame) are >= 20 px on it, well inside YuNet's range.
DOOR_DETECT_SIZE = (320, 256)


@dataclass(frozen=True)
class FaceResult:
    """One face of a frame: the detection, what the quality gate measured, the decision."""

    face: Face
    quality: QualityReport
    decision: Decision


@dataclass(frozen=True)
class FrameResult:
    """All faces of one frame and the frame's latency in milliseconds."""

    index: int
    source: str
    faces: tuple[FaceResult, ...]
    latency_ms: float


@dataclass
class RunSummary:
    """Counts and latencies of a whole run."""

    frames: int = 0
    faces: int = 0
    admitted: int = 0
    skipped_faces: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def latency_percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of per-frame latency (None before any frame)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


class Station:
    """Runs the door loop over frames.

    Args:
        gallery: the open gallery of enrolled people.
        model: the embedding runtime; its card must be the gallery's.
        detector: a face detector with five landmarks (e.g. ``create_detector('yunet')``).
        decider: threshold and margin rules (``Decider(card, far=...)``).
        quality: quality-gate limits.
        audit: where each decision is logged (``None``: not logged).
        max_faces: judge at most this many faces per frame, best detections first.

    Raises:
        GalleryModelError: the model is not the one the gallery was enrolled with.
    """

    def __init__(self, gallery: Gallery, model: Runtime, detector: FaceDetector,
                 decider: Decider, quality: QualityConfig | None = None,
                 audit: AuditLog | None = None, max_faces: int | None = None) -> None:
        if model.card.sha256 != gallery.card.sha256:
            raise GalleryModelError(f"model {model.card.name!r} is not the model of gallery "
                                    f"{gallery.path} ({gallery.card.name!r}): use the same card")
        self.gallery, self.model, self.detector = gallery, model, detector
        self.decider = decider
        self.quality = quality or QualityConfig()
        self.audit = audit
        self.max_faces = max_faces
        self.crop_size = tuple(model.card.input.size)

    def process(self, image: np.ndarray, index: int = 0, source: str = "") -> FrameResult:
        """Judge every face in one BGR frame and write the decisions to the audit log.

        Args:
            image: BGR uint8 frame.
            index: frame number, for the audit log.
            source: where the frame came from, for the audit log.

        Returns:
            The frame's faces with their decisions, and its latency.
        """
        start = time.perf_counter()
        faces = self.detector.detect(image)[: self.max_faces]
        reports = [check_face(f.box, f.landmarks, self.quality) for f in faces]
        crops, usable = [], []
        for i, (face, report) in enumerate(zip(faces, reports)):
            if not report.ok:
                continue
            crop = align(image, face.landmarks, self.crop_size)
            reports[i] = check_crop(report, crop, self.quality)
            if reports[i].ok:
                crops.append(crop)
                usable.append(i)
        decisions = [self.decider.skipped(r) if not r.ok else None for r in reports]
        if crops:
            embeddings = self.model.embed(np.stack(crops))
            for i, decision in zip(usable, self.decider.decide(embeddings, self.gallery.templates())):
                decisions[i] = decision
        latency = (time.perf_counter() - start) * 1000.0
        result = FrameResult(index, source, tuple(FaceResult(f, r, d) for f, r, d in
                                                  zip(faces, reports, decisions)), latency)
        self._audit(result)
        return result

    def run(self, source: FrameSource, output_video: str | os.PathLike | None = None,
            fps: float = 10.0, max_frames: int | None = None) -> RunSummary:
        """Process frames from ``source`` until it ends (or ``max_frames``).

        Args:
            source: an open frame source (see ``open_source``).
            output_video: write annotated frames here (.mp4 or .avi); ``None``: no video.
            fps: frame rate of the output video.
            max_frames: stop after this many frames.

        Returns:
            Counts and per-frame latencies.

        Raises:
            ConfigError: the output video cannot be written.
        """
        summary, writer = RunSummary(), None
        try:
            for frame in source:
                result = self.process(frame.image, frame.index, frame.source)
                _count(summary, result)
                if output_video is not None:
                    writer = writer or _open_writer(Path(output_video), frame.image.shape, fps)
                    writer.write(_fit(annotate(frame.image, result), writer_size=writer.size))
                if max_frames is not None and summary.frames >= max_frames:
                    break
        finally:
            if writer is not None:
                writer.release()
        log.info("%d frame(s), %d face(s), %d admitted, %d skipped by the quality gate; median "
                 "latency %s ms", summary.frames, summary.faces, summary.admitted,
                 summary.skipped_faces, _fmt(summary.latency_percentile(50)))
        return summary

    def _audit(self, result: FrameResult) -> None:
        if self.audit is None:
            return
        card = self.model.card
        context = AuditContext(card.name, card.sha256, result.latency_ms, result.index, result.source)
        for face in result.faces:
            self.audit.write(face.decision, context, face.face.box)


def annotate(image: np.ndarray, result: FrameResult) -> np.ndarray:
    """A copy of ``image`` with each face's box and decision drawn on it."""
    out = image.copy()
    for face in result.faces:
        x, y, w, h = (int(round(v)) for v in face.face.box)
        decision = face.decision
        if decision.admitted:
            colour, label = (0, 200, 0), f"{decision.person} {decision.score:.2f}"
        elif decision.score is None:
            colour, label = (0, 200, 255), decision.reason
        else:
            colour, label = (0, 0, 230), f"{decision.reason} {decision.score:.2f}"
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
        cv2.putText(out, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    cv2.putText(out, f"{result.latency_ms:.0f} ms", (4, out.shape[0] - 6),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class _Writer:
    """cv2.VideoWriter that remembers its frame size."""

    def __init__(self, writer: cv2.VideoWriter, size: tuple[int, int]) -> None:
        self._writer, self.size = writer, size

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)

    def release(self) -> None:
        self._writer.release()


def _open_writer(path: Path, shape: tuple[int, ...], fps: float) -> _Writer:
    suffix = path.suffix.lower()
    if suffix not in _FOURCC:
        raise ConfigError(f"output video {path}: unknown suffix {suffix!r}; use one of "
                          f"{', '.join(_FOURCC)}")
    size = (int(shape[1]), int(shape[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*_FOURCC[suffix]), fps, size)
    if not writer.isOpened():
        raise ConfigError(f"cannot write video {path} with codec {_FOURCC[suffix]}: check the "
                          "folder exists and is writable, or try .avi")
    return _Writer(writer, size)


def _fit(image: np.ndarray, writer_size: tuple[int, int]) -> np.ndarray:
    # A video has one frame size; images of a folder may differ, so they are resized.
    if (image.shape[1], image.shape[0]) != writer_size:
        return cv2.resize(image, writer_size, interpolation=cv2.INTER_AREA)
    return image


def _count(summary: RunSummary, result: FrameResult) -> None:
    summary.frames += 1
    summary.faces += len(result.faces)
    summary.admitted += sum(f.decision.admitted for f in result.faces)
    summary.skipped_faces += sum(not f.quality.ok for f in result.faces)
    summary.latencies_ms.append(result.latency_ms)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
