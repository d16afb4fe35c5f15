"""Errors of the access-control core.

They subclass ``MaskEdgeError`` so ``main.py`` maps them to exit code 2 with the message.
They live here, not in ``edge/errors.py``, only because this package was written beside it;
moving them there later changes no caller (``edge.access`` re-exports them).
"""

from __future__ import annotations

from edge.errors import MaskEdgeError


class GalleryError(MaskEdgeError):
    """The gallery file is missing, corrupt, of another schema, or an operation on it is invalid."""


class GalleryKeyError(GalleryError):
    """The gallery key is missing, malformed, unsafe (world-readable file) or does not open it."""


class GalleryModelError(GalleryError):
    """The gallery was enrolled with a different model than the one given."""


class SourceError(MaskEdgeError):
    """A frame source (camera, video file, stream, image folder) cannot be opened."""
