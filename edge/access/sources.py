"""Frame sources for the door loop: a camera, a video file, a stream URL, a folder of images.

Cameras, files and streams all go through ``cv2.VideoCapture``; a folder yields its images
in sorted name order. A frame that cannot be decoded is skipped with a warning and the run
goes on: one bad frame must not stop a door. Nothing here opens a window (headless).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.access.errors import SourceError
from edge.errors import ImageError
from edge.image import read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class Frame:
    """One frame: its running index, where it came from, the BGR uint8 pixels, a timestamp."""

    index: int
    source: str
    image: np.ndarray
    time: float


class FrameSource:
    """Base class: iterate to get frames; ``close`` releases the device or file."""

    name = "source"

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (nothing by default)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSource(FrameSource):
    """Images of a folder in sorted name order; unreadable images are skipped with a warning.

    Args:
        folder: the folder; files with other suffixes are ignored.

    Raises:
        SourceError: the folder does not exist or holds no image files.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} does not exist")
        self.files = sorted(p for p in self.folder.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"{self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.name = str(self.folder)
        self.skipped: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                image = read_image(path)
            except ImageError as err:
                self.skipped.append(path)
                log.warning("skipping frame %d: %s", index, err)
                continue
            yield Frame(index, str(path), image, time.time())


class CaptureSource(FrameSource):
    """A camera index, video file or stream URL read with ``cv2.VideoCapture``.

    Args:
        spec: camera index (int), a video file path, or a stream URL.
        max_failures: consecutive unreadable frames after which the source is deemed
            finished (a file past its end, a camera unplugged, a stream gone).

    Raises:
        SourceError: OpenCV cannot open the source.
    """

    def __init__(self, spec: int | str | os.PathLike, max_failures: int = 25) -> None:
        if isinstance(spec, (str, os.PathLike)) and not str(spec).startswith(URL_SCHEMES):
            if not Path(spec).is_file():
                raise SourceError(f"video file {spec} does not exist")
        self.name = f"camera:{spec}" if isinstance(spec, int) else str(spec)
        self.is_file = not isinstance(spec, int) and not str(spec).startswith(URL_SCHEMES)
        self.max_failures = max_failures
        self.capture = cv2.VideoCapture(spec if isinstance(spec, int) else str(spec))
        if not self.capture.isOpened():
            raise SourceError(f"cannot open {self.name}: check the camera index, the file's "
                              "codec or the stream URL (OpenCV could not open it)")
        self.skipped = 0

    @property
    def fps(self) -> float | None:
        """Frames per second the source reports, if any."""
        value = self.capture.get(cv2.CAP_PROP_FPS)
        return float(value) if value and value > 0 else None

    def __iter__(self) -> Iterator[Frame]:
        index, failures = 0, 0
        while failures < self.max_failures:
            ok, image = self.capture.read()
            if ok and image is not None and image.size:
                failures = 0
                yield Frame(index, self.name, image, time.time())
            else:
                failures += 1
                if self.is_file and self._past_end():
                    return
                self.skipped += 1
                log.warning("skipping unreadable frame %d of %s", index, self.name)
            index += 1
        log.warning("%s gave %d unreadable frames in a row; stopping", self.name, failures)

    def _past_end(self) -> bool:
        total = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        position = self.capture.get(cv2.CAP_PROP_POS_FRAMES)
        return total <= 0 or position >= total

    def close(self) -> None:
        self.capture.release()


def open_source(spec: int | str | os.PathLike) -> FrameSource:
    """Open a frame source from a command-line style spec.

    Args:
        spec: ``0`` / ``"0"`` (camera index), a stream URL (``rtsp://...``), a folder of
            images, or a video file.

    Returns:
        A ``FolderSource`` or a ``CaptureSource``.

    Raises:
        SourceError: the source does not exist or cannot be opened.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        return CaptureSource(int(spec))
    if str(spec).startswith(URL_SCHEMES):
        return CaptureSource(str(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.is_file():
        return CaptureSource(path)
    raise SourceError(f"frame source {spec} is neither a camera index, a stream URL "
                      f"({', '.join(URL_SCHEMES)}), a folder nor an existing video file")
