"""Colour helpers for the mask renderer: tint, grey conversion and brightness matching."""

from __future__ import annotations

import cv2
import numpy as np

# ITU-R BT.601 weights in BGR order, the ones cv2.cvtColor uses for BGR2GRAY.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)


def luma(bgr: np.ndarray) -> np.ndarray:
    """Return the BT.601 luma of a float or uint8 (..., 3) BGR array as float32 (...)."""
    return bgr.astype(np.float32) @ _LUMA_BGR


def is_grayscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """Whether an image carries no colour (2-D, or three nearly equal channels).

    LFW-a and many edge cameras are grey: a coloured mask on them would be an obvious artefact.

    Args:
        image: (H, W) or (H, W, 3) uint8.
        tolerance: largest channel difference still called grey (JPEG noise).

    Returns:
        True for a grey image.
    """
    if image.ndim == 2:
        return True
    # A strided sample is enough and keeps this cheap on multi-megapixel photos.
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65536)))
    sample = image[::step, ::step].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return bool(np.percentile(spread, 99) <= tolerance)


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Draw a plausible fabric colour (BGR): any hue, muted to strong saturation, mid-bright.

    Args:
        rng: the random generator (its state advances by three draws).

    Returns:
        A BGR colour of ints in [0, 255].
    """
    hue = rng.uniform(0, 180)
    sat = rng.uniform(0.15, 0.85) * 255
    val = rng.uniform(0.35, 1.0) * 255
    hsv = np.array([[[hue, sat, val]]], dtype=np.float32).round().astype(np.uint8)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def tint(bgr: np.ndarray, opaque: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Recolour a mask picture, keeping its folds and shading.

    The luma texture is normalised to mean 1 over the opaque pixels and multiplied by the colour,
    so a white and a black template both end up with ``colour`` on average.

    Args:
        bgr: (H, W, 3) float32 template colours in [0, 255].
        opaque: (H, W) bool, the pixels that belong to the mask.
        colour: the BGR target colour.

    Returns:
        (H, W, 3) float32 recoloured picture in [0, 255].
    """
    texture = luma(bgr)
    mean = float(texture[opaque].mean()) if np.any(opaque) else 1.0
    # Soften the texture's contrast for dark templates, whose relative noise is large.
    shade = np.clip(1.0 + 0.6 * (texture / max(mean, 1.0) - 1.0), 0.0, 2.0)
    return np.clip(shade[..., None] * np.asarray(colour, np.float32), 0, 255)


def region_luma(image: np.ndarray, polygon: np.ndarray) -> float:
    """Median luma of the image inside a polygon (the face area the mask will cover).

    Args:
        image: (H, W) or (H, W, 3) uint8.
        polygon: (N, 2) image points.

    Returns:
        The median luma in [0, 255]; the whole image's median if the polygon is off-image.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    inside = np.zeros(grey.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(polygon).astype(np.int32)], 1)
    values = grey[inside.astype(bool)]
    if values.size == 0:
        # The face lies outside the frame: nothing better than the picture's overall level.
        values = grey
    return float(np.median(values))
