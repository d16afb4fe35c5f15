"""Contact sheets: a grid of pictures with captions, so a person can check rendered masks."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.errors import ConfigError, ImageError


def _tile(image: np.ndarray, label: str, size: int, caption_h: int) -> np.ndarray:
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    scale = size / max(image.shape[:2])
    # Upscale small crops with nearest so pixels stay honest; shrink large ones with area.
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)),
                                 max(1, round(image.shape[0] * scale))), interpolation=interp)
    tile = np.full((size + caption_h, size, 3), 255, np.uint8)
    tile[: resized.shape[0], : resized.shape[1]] = resized
    font_scale = max(0.3, size / 600)
    cv2.putText(tile, label, (3, size + caption_h - 6), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str] | None = None,
                  cols: int = 6, tile_size: int = 224) -> np.ndarray:
    """Arrange pictures in a captioned grid.

    Args:
        images: uint8 (H, W) grey or (H, W, 3) BGR pictures of any sizes.
        labels: one caption per picture (empty captions if None).
        cols: pictures per row.
        tile_size: side of each square tile in pixels (pictures keep their aspect ratio).

    Returns:
        (rows * (tile_size + caption), cols * tile_size, 3) uint8 BGR image; write it with
        ``cv2.imwrite("sheet.png", sheet)``.

    Raises:
        ConfigError: no images, a label count that differs, or cols / tile_size < 1.
        ImageError: an entry is not a uint8 grey or BGR array.
    """
    if len(images) == 0:
        raise ConfigError("contact_sheet needs at least one image")
    labels = [""] * len(images) if labels is None else list(labels)
    if len(labels) != len(images):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels: pass one label per image")
    if cols < 1 or tile_size < 16:
        raise ConfigError(f"cols must be >= 1 and tile_size >= 16, got {cols} and {tile_size}")
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) \
                or (image.ndim == 3 and image.shape[2] != 3):
            raise ImageError(f"image {i} is not a uint8 (H, W) or (H, W, 3) array")
    caption_h = max(14, tile_size // 10)
    tiles = [_tile(im, str(lab), tile_size, caption_h) for im, lab in zip(images, labels)]
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % cols)
    rows = [np.hstack(tiles[i: i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)
