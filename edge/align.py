"""Five-point similarity alignment onto the ArcFace 112x112 template.

The similarity (rotation, uniform scale, translation) is the least-squares fit of Umeyama
(1991), the same one insightface's ``norm_crop`` gets from scikit-image, written here in
numpy so the device needs neither scikit-image nor a RANSAC that could drop a landmark.

Sizes are (height, width), like ``ModelCard.input.size``, so a card's size can be passed
straight in. Other sizes keep the template's vertical framing: it is scaled by height/112
and centred horizontally. That gives the classic SphereFace 96-wide template (x - 8) for
``size=(112, 96)`` and a uniformly scaled template for ``(128, 128)``.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.errors import ConfigError

log = logging.getLogger(__name__)

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # right eye (subject's right, smaller x)
        [73.5318, 51.5014],  # left eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # right mouth corner
        [70.7299, 92.2041],  # left mouth corner
    ],
    dtype=np.float32,
)
ARCFACE_SIZE = 112


def template(size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Return the five reference points for a crop of ``size``.

    Args:
        size: (height, width) of the aligned crop.

    Returns:
        float32 (5, 2) x, y reference points.

    Raises:
        ConfigError: a side is smaller than 16 pixels.
    """
    height, width = _check_size(size)
    scale = height / ARCFACE_SIZE
    points = ARCFACE_TEMPLATE * scale
    points[:, 0] += (width - ARCFACE_SIZE * scale) / 2.0
    return points.astype(np.float32)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama).

    Args:
        src: (N, 2) source points, N >= 2.
        dst: (N, 2) destination points.

    Returns:
        float64 (2, 3) matrix M with ``dst ~= M @ [x, y, 1]``.

    Raises:
        ValueError: shapes differ or the source points all coincide.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("landmarks coincide: cannot fit a similarity transform")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    # Flip the last axis if needed so the fit is a rotation, never a reflection.
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Return the 2x3 matrix taking image coordinates to crop coordinates.

    Args:
        landmarks: (5, 2) detector landmarks (right eye, left eye, nose, right mouth
            corner, left mouth corner) in image pixels.
        size: (height, width) of the crop.

    Returns:
        float64 (2, 3) similarity matrix, usable with ``cv2.warpAffine``.

    Raises:
        ValueError: landmarks are not (5, 2) or coincide.
        ConfigError: size is too small.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {landmarks.shape}")
    return similarity_matrix(landmarks, template(size))


def align(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112),
          border_value: int = 0) -> np.ndarray:
    """Warp ``image`` so the five landmarks land on the template of ``size``.

    Args:
        image: (H, W, 3) or (H, W) uint8 image.
        landmarks: (5, 2) landmarks in ``image`` pixels, in YuNet/ArcFace order.
        size: (height, width) of the crop.
        border_value: fill for pixels outside the source image.

    Returns:
        The aligned crop, shape (height, width[, 3]), same dtype as ``image``.

    Raises:
        ValueError: landmarks are not (5, 2) or coincide.
        ConfigError: size is too small.
    """
    matrix = alignment_matrix(landmarks, size)
    height, width = _check_size(size)
    fill = (border_value,) * 3
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to (N, 2) points.

    Args:
        matrix: (2, 3) affine matrix, e.g. from ``alignment_matrix``.
        points: (N, 2) or (2,) x, y points.

    Returns:
        float32 points of the same shape, in the matrix's target coordinates.

    Raises:
        ValueError: the matrix is not 2x3 or points are not (..., 2).
    """
    matrix = np.asarray(matrix, np.float64)
    points = np.asarray(points, np.float64)
    if matrix.shape != (2, 3) or points.shape[-1] != 2:
        raise ValueError(f"need a (2, 3) matrix and (N, 2) points, got {matrix.shape}, {points.shape}")
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return (height, width) as ints, raising on sizes too small to hold a face."""
    if len(size) != 2 or min(size) < 16:
        raise ConfigError(f"crop size must be (height, width) with both >= 16, got {size}")
    return int(size[0]), int(size[1])
