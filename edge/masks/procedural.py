"""A mask drawn from the six anchor targets alone, for when no template folder exists.

The offline demo runs on a fresh install with no data root, so the MaskTheFace PNGs are not
there. This draws a pleated surgical-style mask over the same six targets the templates are
warped onto (bridge corners a/c, bridge b, jaw corners d/f, chin e): enough to show a
masked probe at the door. Evaluation and training always use the real templates.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.masks.landmarks import mask_targets

COLOUR = (235, 205, 150)  # BGR light surgical blue
COLOURS = (COLOUR, (240, 240, 240), (60, 60, 60), (200, 225, 190))  # blue, white, black, green
PLEATS = 3


def draw_mask(image_bgr: np.ndarray, landmarks: np.ndarray,
              colour: tuple[int, int, int] = COLOUR) -> tuple[np.ndarray, np.ndarray]:
    """Draw a procedural mask; returns (masked image, alpha coverage (H, W) float32)."""
    colour = tuple(int(v) for v in colour)
    a, b, c, d, e, f = mask_targets(landmarks)
    outline = np.concatenate([_curve(a, b, c), _curve(f, e, d)]).astype(np.int32)
    h, w = image_bgr.shape[:2]
    cover = np.zeros((h, w), np.uint8)
    cv2.fillPoly(cover, [outline], 255, lineType=cv2.LINE_AA)
    fabric = np.empty_like(image_bgr)
    fabric[:] = colour
    # Shade the fabric by the face's own brightness so it sits in the photo's light.
    shade = cv2.GaussianBlur(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), (0, 0), 6)
    gain = 0.55 + 0.45 * (shade.astype(np.float32) / 255.0)
    fabric = (fabric.astype(np.float32) * gain[..., None]).clip(0, 255).astype(np.uint8)
    for k in range(1, PLEATS + 1):
        t = k / (PLEATS + 1)
        left, right = a + (d - a) * t, c + (f - c) * t
        cv2.line(fabric, tuple(left.astype(int)), tuple(right.astype(int)),
                 tuple(int(v * 0.8) for v in colour), max(1, int(np.linalg.norm(c - a) / 60)),
                 cv2.LINE_AA)
    alpha = cv2.GaussianBlur(cover, (0, 0), 1.0).astype(np.float32) / 255.0
    out = image_bgr.astype(np.float32) * (1 - alpha[..., None]) + fabric * alpha[..., None]
    return out.round().astype(np.uint8), alpha


def _curve(start: np.ndarray, middle: np.ndarray, end: np.ndarray, n: int = 24) -> np.ndarray:
    # Quadratic Bezier through `middle` (its control point is set so the curve passes it).
    control = 2 * middle - (start + end) / 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
