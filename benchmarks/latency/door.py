"""The door station over a long run: decisions per second and memory, frame after frame.

``bench_door`` enrolls the clip's people into a real encrypted gallery (photo + two
synthetic-masked templates each), then plays the door clip in a loop through
``edge.access.Station`` (detect -> quality gate -> align -> embed -> decide -> audit log),
exactly what ``main.py access run`` does, for ``frames`` frames. It records per-frame
latency including decoding, decisions per second, how many decisions named the right person,
and the process's resident memory every ``sample_every`` frames. Memory is *flat* when the
least-squares slope over the samples after warm-up stays under ``FLAT_MB_PER_1K`` MiB per
1,000 frames (a leak of one 640x480 frame per 1,000 frames would be 0.9 MiB).

The detector canvas is the door setting, ``edge.access.DOOR_DETECT_SIZE`` (320x256, what
``access run`` uses by default).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.latency.stats import summarize
from benchmarks.latency.system import current_rss_mb
from benchmarks.latency.video import DoorClip
from edge.access.station import DOOR_DETECT_SIZE
from edge.errors import DatasetError, NoFaceError

log = logging.getLogger(__name__)
FLAT_MB_PER_1K = 0.5


def bench_door(clip: DoorClip, model: str, runtime: str | None = None, threads: int = 2,
               frames: int = 10_000, detect_size: tuple[int, int] = DOOR_DETECT_SIZE,
               sample_every: int = 250, warmup: int = 20, progress: bool = True) -> dict[str, Any]:
    """Run the station over ``frames`` frames of the looped clip; return a ``kind="door"`` record.

    Raises:
        DatasetError: the clip cannot be read. MaskEdgeError: model, detector or gallery problems.
    """
    from edge.access import AuditLog, Decider, Gallery, Station, load_key
    from edge.detect import create_detector
    from edge.runtimes import load_model, runtime_for_suffix
    from edge.zoo import resolve_model

    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        path = resolve_model(model)
        net = load_model(path, runtime=runtime, threads=threads)
        detector = create_detector("yunet", input_size=detect_size, order="size")
        with tempfile.TemporaryDirectory(prefix="maskedge-door-") as work:
            gallery = Gallery.create(Path(work) / "door.db", net.card, load_key(Path(work) / "door.key"))
            enrolled = _enroll(gallery, clip, net, detector)
            audit = AuditLog(Path(work) / "audit.jsonl")
            station = Station(gallery, net, detector, Decider(net.card), audit=audit, max_faces=1)
            play = _play(station, clip, frames + warmup, warmup, sample_every, progress)
            gallery.close()
    finally:
        cv2.setNumThreads(previous)
    return _record(net, path, runtime or runtime_for_suffix(path), threads, detector, clip, enrolled, play)


def _enroll(gallery, clip: DoorClip, net, detector) -> int:
    from edge.access.enroll import enrollment_templates
    from edge.image import read_image

    count = 0
    for i, (name, jpeg) in enumerate(clip.enrol.items()):
        try:
            emb, kinds = enrollment_templates(read_image(jpeg), net, detector, masked=2, seed=i, name=name)
        except NoFaceError:
            log.warning("no face in the enrolment photo of %s; not enrolled", name)
            continue
        gallery.enroll(name, emb, kinds)
        count += 1
    return count


def _frames(clip: DoorClip):
    """Endless (frame, truth) pairs: the clip, reopened at its end."""
    while True:
        capture = cv2.VideoCapture(str(clip.path))
        if not capture.isOpened():
            raise DatasetError(f"OpenCV cannot open {clip.path}: re-create the clip")
        try:
            for truth in clip.truth:
                ok, frame = capture.read()
                if not ok:
                    raise DatasetError(f"{clip.path} ended early: re-create the clip")
                yield frame, truth
        finally:
            capture.release()


def _play(station, clip: DoorClip, total: int, warmup: int, sample_every: int, progress: bool) -> dict:
    from tqdm import tqdm

    latencies, memory, decisions, correct, admitted = [], [], 0, 0, 0
    stream = _frames(clip)
    wall_start = None
    for index in tqdm(range(total), desc="door", unit="frame", disable=not progress):
        if index == warmup:
            wall_start = time.perf_counter()
        t0 = time.perf_counter()
        frame, truth = next(stream)
        result = station.process(frame, index, clip.path.name)
        if index >= warmup:
            latencies.append((time.perf_counter() - t0) * 1e3)
            for face in result.faces:
                decisions += 1
                admitted += face.decision.admitted
                correct += face.decision.person == truth
        if index >= warmup and (index - warmup) % sample_every == 0:
            memory.append((index - warmup, current_rss_mb()))
    wall = time.perf_counter() - wall_start
    memory.append((total - warmup, current_rss_mb()))
    return {"latencies": latencies, "memory": memory, "decisions": decisions, "correct": correct,
            "admitted": admitted, "wall_s": wall}


def memory_slope(samples: list[tuple[int, float | None]]) -> float | None:
    """Least-squares growth of RSS in MiB per 1,000 frames (None without /proc)."""
    points = [(f, m) for f, m in samples if m is not None]
    if len(points) < 3:
        return None
    x, y = np.array(points, float).T
    return float(np.polyfit(x / 1000.0, y, 1)[0])


def _record(net, path: Path, runtime: str, threads: int, detector, clip: DoorClip, enrolled: int,
            play: dict) -> dict[str, Any]:
    frames = len(play["latencies"])
    slope = memory_slope(play["memory"])
    rss = [m for _, m in play["memory"] if m is not None]
    return {
        "kind": "door",
        "model": net.card.name, "precision": net.card.precision, "file": path.name,
        "runtime": runtime, "threads": threads, "detector": repr(detector),
        "video": {"file": clip.path.name, "size": list(clip.size), "frames_in_clip": len(clip.truth)},
        "enrolled": enrolled, "frames": frames,
        "frames_per_s": frames / play["wall_s"], "decisions": play["decisions"],
        "decisions_per_s": play["decisions"] / play["wall_s"],
        "admitted": play["admitted"], "correct": play["correct"],
        "latency": summarize(play["latencies"]).to_dict(),
        "memory": {"samples": play["memory"], "start_mb": rss[0] if rss else None,
                   "end_mb": rss[-1] if rss else None, "max_mb": max(rss) if rss else None,
                   "slope_mb_per_1k_frames": slope,
                   "flat": None if slope is None else abs(slope) < FLAT_MB_PER_1K},
    }
