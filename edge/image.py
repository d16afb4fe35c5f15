"""Read an image file (or its bytes) into a BGR uint8 array, with errors that name the fix.

``cv2.imread`` returns ``None`` for every kind of failure and silently decodes a truncated
JPEG with a grey lower half; a face kit fed such a file would embed garbage. ``read_image``
tells the cases apart and raises ``ImageError`` saying what is wrong and what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from edge.errors import ImageError

log = logging.getLogger(__name__)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview]

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# Some cameras and editors append a few bytes after the EOI marker; look for it in the tail
# rather than demanding it be the very last two bytes.
_EOI_SEARCH_TAIL = 2048


def read_image(source: ImageSource) -> np.ndarray:
    """Decode an image file or its bytes into a BGR uint8 array of shape (H, W, 3).

    Grayscale and 16-bit images are converted to 3-channel 8-bit BGR; EXIF orientation is
    applied (OpenCV's default), so the array is upright as a viewer shows it.

    Args:
        source: a path (``str`` / ``os.PathLike``) or the encoded bytes of a JPEG, PNG,
            BMP, WebP or any other format OpenCV reads.

    Returns:
        The decoded image, ``np.uint8``, shape (H, W, 3), BGR order.

    Raises:
        ImageError: the file is missing, unreadable or empty, the bytes are not an image,
            or a JPEG is truncated (no end-of-image marker).
        TypeError: ``source`` is neither a path nor bytes (a programming error).
    """
    data, name = _load_bytes(source)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes): re-copy or re-download the image")
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-_EOI_SEARCH_TAIL:]:
        raise ImageError(
            f"{name} is a truncated JPEG (no end-of-image marker, {len(data)} bytes): the "
            "file was cut off while copying or downloading; fetch it again"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(
            f"{name} is not a readable image ({len(data)} bytes, starts with "
            f"{bytes(data[:8])!r}): pass a JPEG, PNG, BMP or WebP file, or re-export it"
        )
    # IMREAD_COLOR already turns grayscale, 16-bit and alpha images into 8-bit BGR.
    return image


def describe_source(source: object) -> str:
    """Return a short human name for an image source, for error messages.

    Args:
        source: a path, encoded bytes or a decoded array.

    Returns:
        The path as text, or a description such as ``"<1234 bytes>"``.
    """
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<image array {source.shape}>"
    return f"<{type(source).__name__}>"


def _load_bytes(source: ImageSource) -> tuple[bytes, str]:
    """Return the encoded bytes of ``source`` and a name for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), describe_source(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"read_image takes a path or bytes, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise ImageError(f"image file {path} does not exist: check the path")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file: pass a file inside it")
    try:
        return path.read_bytes(), str(path)
    except OSError as err:
        raise ImageError(f"cannot read image file {path} ({err.strerror}): check its permissions") from err

