"""Warping a template onto six target points: a homography, or piecewise-affine when it folds.

MaskTheFace fits one least-squares homography to the six anchor pairs. When the targets agree
with the template's own layout that is the most natural map (it adds perspective). When they
do not (a side view forced onto a frontal face, the gas-mask side views whose anchors lie far
outside the picture) the best homography puts its horizon through the mask and folds or
smears it. Then the template is cut into four triangles around the nose-bridge anchor b,
(a, b, d), (b, e, d), (b, c, f), (b, f, e), each mapped by the affine map its corners fix: a
continuous piecewise-affine map that hits all six targets exactly and never folds.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.masks.landmarks import LandmarkError

# Anchor indices: a=0, b=1, c=2, d=3, e=4, f=5.
TRIANGLES = ((0, 1, 3), (1, 4, 3), (1, 2, 5), (1, 5, 4))


def fit_homography(anchors: np.ndarray, targets: np.ndarray, opaque: np.ndarray,
                   max_perspective: float) -> np.ndarray | None:
    """Least-squares homography anchors -> targets, or None when it is too projective.

    Args:
        anchors: (6, 2) template points.
        targets: (6, 2) image points.
        opaque: (H, W) bool, the template's mask pixels (their box is what must not fold).
        max_perspective: largest allowed ratio of the projective divisor over that box.

    Returns:
        The 3x3 matrix, or None.
    """
    homography, _ = cv2.findHomography(anchors.astype(np.float64), targets.astype(np.float64), 0)
    if homography is None:
        return None
    ys, xs = np.nonzero(opaque)
    corners = np.array([[xs.min(), ys.min(), 1], [xs.max(), ys.min(), 1],
                        [xs.max(), ys.max(), 1], [xs.min(), ys.max(), 1]], np.float64)
    # The divisor w sets the local scale (about 1/w): a wide spread of w over the mask, or a
    # sign change (the horizon crossing it), means a smeared or folded picture.
    w = corners @ homography[2]
    if np.all(w > 0) and w.max() / w.min() <= max_perspective:
        return homography
    return None


def triangle_affines(anchors: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    """The four 2x3 affine maps of the piecewise-affine warp.

    Raises:
        LandmarkError: a target triangle is degenerate or flipped relative to the template's.
    """
    affines = []
    for tri in TRIANGLES:
        src, dst = anchors[list(tri)].astype(np.float32), targets[list(tri)].astype(np.float32)
        if _signed_area(src) * _signed_area(dst) <= 0:
            raise LandmarkError(
                "the mask's target points are folded (e.g. the chin above the nose bridge): the "
                "landmarks do not describe an upright face"
            )
        affines.append(cv2.getAffineTransform(src, dst))
    return affines


def _signed_area(tri: np.ndarray) -> float:
    (x0, y0), (x1, y1), (x2, y2) = tri.astype(np.float64)
    return 0.5 * ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))


def _side(points: np.ndarray, origin: np.ndarray, through: np.ndarray) -> np.ndarray:
    """Sign of the cross product: which side of the line origin -> through each point is on."""
    direction = through - origin
    rel = points - origin
    return np.sign(direction[0] * rel[..., 1] - direction[1] * rel[..., 0])


def piece_labels(points: np.ndarray, six: np.ndarray) -> np.ndarray:
    """Label points with the triangle (0..3) whose affine map applies to them.

    The plane is cut by the rays from b through e, d and f, so each piece extends its
    triangle's map outward and neighbouring maps agree on the shared rays. An orientation-
    preserving piecewise-affine map sends these rays to the same rays of the targets, so the
    labels can be computed on either side.

    Args:
        points: (..., 2) float32 points.
        six: (6, 2) points a..f of the same space.

    Returns:
        (...) uint8 labels.
    """
    a, b, c, d, e, f = six.astype(np.float32)
    left = _side(points, b, e) == _side(a, b, e)
    upper_left = _side(points, b, d) == _side(a, b, d)
    upper_right = _side(points, b, f) == _side(c, b, f)
    return np.where(left, np.where(upper_left, 0, 1), np.where(upper_right, 2, 3)).astype(np.uint8)


def warp_layer(premult: np.ndarray, anchors: np.ndarray, targets: np.ndarray,
               image_shape: tuple[int, ...], max_perspective: float
               ) -> tuple[tuple[int, int, int, int] | None, np.ndarray | None, str]:
    """Warp a premultiplied BGRA float template into the image's frame, cropped to its box.

    Args:
        premult: (H, W, 4) float32: colour * alpha, alpha.
        anchors: (6, 2) template points.
        targets: (6, 2) image points.
        image_shape: the destination image's shape.
        max_perspective: see :func:`fit_homography`.

    Returns:
        ``(roi, warped, kind)``: the clipped box (x0, y0, x1, y1) or None when the mask is off
        the image, the (y1-y0, x1-x0, 4) warped layer, and ``homography`` or
        ``piecewise-affine``.

    Raises:
        LandmarkError: the targets are degenerate or folded.
    """
    height, width = premult.shape[:2]
    opaque = premult[..., 3] > 0.5
    ys, xs = np.nonzero(premult[..., 3] > 0)
    # Only the visible part needs a destination box; transparent margins may map anywhere.
    corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()],
                        [xs.max() + 1, ys.max() + 1], [xs.min(), ys.max() + 1]], np.float64)
    homography = fit_homography(anchors, targets, opaque, max_perspective)
    if homography is not None:
        matrices, kind = [homography], "homography"
    else:
        matrices = [np.vstack([m, [0, 0, 1]]) for m in triangle_affines(anchors, targets)]
        kind = "piecewise-affine"
    mapped = np.concatenate([cv2.perspectiveTransform(corners[None], m)[0] for m in matrices])
    roi = _clip_box(mapped, image_shape)
    if roi is None:
        return None, None, kind
    x0, y0, x1, y1 = roi
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    if kind == "homography":
        return roi, _warp(premult, shift @ homography, (x1 - x0, y1 - y0)), kind
    # One inverse lookup per destination pixel (not four warps added up), so the pieces meet
    # without seams.
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    labels = piece_labels(np.stack([xs, ys], axis=-1), targets)
    map_x, map_y = np.zeros_like(xs), np.zeros_like(ys)
    for index, matrix in enumerate(matrices):
        inverse = cv2.invertAffineTransform(matrix[:2])
        chosen = labels == index
        map_x[chosen] = inverse[0, 0] * xs[chosen] + inverse[0, 1] * ys[chosen] + inverse[0, 2]
        map_y[chosen] = inverse[1, 0] * xs[chosen] + inverse[1, 1] * ys[chosen] + inverse[1, 2]
    warped = cv2.remap(premult, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    return roi, warped, kind


def _warp(layer: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpPerspective(layer, matrix, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _clip_box(points: np.ndarray, image_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    x0, y0 = np.floor(points.min(0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(0)).astype(int) + 2
    x0, y0 = max(int(x0), 0), max(int(y0), 0)
    x1, y1 = min(int(x1), image_shape[1]), min(int(y1), image_shape[0])
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)
