"""Detect and align in one call: the front half of every verification pipeline."""

from __future__ import annotations

import logging

import numpy as np

from edge.align import align
from edge.detect import Face, FaceDetector
from edge.errors import NoFaceError
from edge.image import ImageSource, describe_source, read_image

log = logging.getLogger(__name__)


def detect_and_align(image: np.ndarray | ImageSource, detector: FaceDetector,
                     size: tuple[int, int] = (112, 112),
                     max_faces: int | None = None,
                     source: str | None = None) -> list[tuple[Face, np.ndarray]]:
    """Find the faces in an image and return each with its aligned crop.

    Args:
        image: a BGR uint8 array, or a path / encoded bytes read with ``read_image``.
        detector: e.g. ``YuNetDetector()``; its order (score or size) is kept.
        size: (height, width) of the aligned crops.
        max_faces: keep at most this many faces (``None``: all).
        source: how to name the image in errors (default: described from ``image``).

    Returns:
        (face, crop) pairs, best first; each crop is uint8 (height, width, 3).

    Raises:
        ImageError: the image cannot be read.
        NoFaceError: the detector found no face.
    """
    name = source or describe_source(image)
    pixels = image if isinstance(image, np.ndarray) else read_image(image)
    faces = detector.detect(pixels)
    if not faces:
        raise NoFaceError(
            f"no face found in {name}: use a photo where the face is upright, well lit, "
            "unobstructed except for a mask and at least ~40 pixels wide"
        )
    if max_faces is not None:
        faces = faces[:max_faces]
    return [(face, align(pixels, face.landmarks, size)) for face in faces]
