"""A door-camera test clip made from LFW: 640x480 frames, one known person per frame.

LFW photos (250x250, grayscale in the ``lfw-a-gray`` release) are pasted at varying places
and scales onto a noisy grey background and written with ``cv2.VideoWriter`` (Motion-JPEG in
AVI, which every OpenCV build writes). Each person's ``_0001`` photo is the enrolment photo
for the gallery; the ``_0002`` photo appears in the clip, so a match is a real
identification, not a copy. The data set is read straight from the tgz, never copied.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import DatasetError
from edge.paths import data_file

log = logging.getLogger(__name__)

LFW_TGZ = "lfw/lfw-a-gray.tgz"
FRAME_SIZE = (640, 480)  # width, height
SCALES = (1.0, 1.5)  # each probe photo appears once per scale


@dataclass(frozen=True)
class DoorClip:
    """A written clip and what is in it.

    Attributes:
        path: the .avi file.
        truth: the person shown in each frame, in frame order.
        enrol: person -> JPEG bytes of the enrolment photo (``_0001``).
        size: (width, height) of the frames.
        fps: nominal frame rate written in the file.
    """

    path: Path
    truth: tuple[str, ...]
    enrol: dict[str, bytes]
    size: tuple[int, int]
    fps: float


def lfw_pairs(people: int, root: str | None = None) -> dict[str, tuple[bytes, bytes]]:
    """JPEG bytes of ``_0001`` and ``_0002`` of the first ``people`` LFW people who have both.

    Raises:
        DataRootError: the LFW tgz is not under the data root.
        DatasetError: the archive is unreadable or holds fewer such people.
    """
    tgz = data_file(LFW_TGZ, root)
    seen: dict[str, dict[int, bytes]] = {}
    done: dict[str, tuple[bytes, bytes]] = {}
    try:
        with tarfile.open(tgz, "r|gz") as archive:  # streamed: one pass, stop early
            for member in archive:
                parts = member.name.split("/")
                if len(parts) != 3 or not member.isfile():
                    continue
                stem = parts[2].rsplit(".", 1)[0]
                name, _, number = stem.rpartition("_")
                if number not in ("0001", "0002"):
                    continue
                photos = seen.setdefault(name, {})
                photos[int(number)] = archive.extractfile(member).read()
                if len(photos) == 2:
                    done[name] = (photos[1], photos[2])
                    if len(done) == people:
                        break
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"cannot read {tgz} ({err}): re-download lfw-a-gray.tgz") from None
    if len(done) < people:
        raise DatasetError(f"{tgz} has only {len(done)} people with two photos, {people} asked")
    return done


def make_door_clip(out: Path, people: int = 60, fps: float = 10.0, seed: int = 0,
                   root: str | None = None) -> DoorClip:
    """Write a 640x480 MJPG/AVI clip of ``people`` x ``len(SCALES)`` frames to ``out``.

    Raises:
        DatasetError: LFW unreadable, or OpenCV cannot write the video.
    """
    pairs = lfw_pairs(people, root)
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise DatasetError(f"OpenCV cannot write {out} with the MJPG codec: check the OpenCV build")
    truth = []
    try:
        for name, (_, probe) in pairs.items():
            photo = cv2.imdecode(np.frombuffer(probe, np.uint8), cv2.IMREAD_COLOR)
            for scale in SCALES:
                writer.write(_frame(photo, scale, rng))
                truth.append(name)
    finally:
        writer.release()
    log.info("wrote %s: %d frames of %dx%d", out, len(truth), *FRAME_SIZE)
    return DoorClip(out, tuple(truth), {n: p[0] for n, p in pairs.items()}, FRAME_SIZE, fps)


def _frame(photo: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    width, height = FRAME_SIZE
    frame = np.clip(rng.normal(110, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    face = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    fh, fw = face.shape[:2]
    x = int(rng.integers(0, width - fw + 1))
    y = int(rng.integers(0, height - fh + 1))
    frame[y : y + fh, x : x + fw] = face
    return frame
