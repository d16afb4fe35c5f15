"""Face geometry for mask placement: the six target points a..f and the yaw, from landmarks.

All points are (x, y) image pixels. Three landmark sets are understood, told apart by shape:

* ``(5, 2)``: ArcFace / YuNet order: right eye (image-left), left eye, nose tip, right mouth
  corner (image-left), left mouth corner.
* ``(68, 2)``: dlib / iBUG 68 points, 0-based: jaw 0-16 (0 at the image-left ear, 8 the chin),
  nose bridge 27-30 (30 the tip), eyes 36-41 and 42-47, mouth corners 48 and 54.
* ``(468, 2)`` or ``(478, 2)``: MediaPipe face mesh (the 478 variant adds irises). Used: eye
  corners 33/133 and 362/263, nose tip 1, nose bridge 168 -> 6 -> 197 -> 195 -> 4, mouth
  corners 61/291, face oval 93 / 323 (cheeks at nose-bridge height), 172 / 397 (jaw below the
  mouth corners), 152 (chin).

Target points match the template anchors: a / c upper corners on the cheeks just below the
nose-bridge line, b on the nose bridge, d / f lower corners on the jaw, e under the chin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.errors import MaskEdgeError

logger = logging.getLogger(__name__)

# dlib 68, 0-based (iBUG 300-W numbering minus one).
DLIB68_EYE_RIGHT = tuple(range(36, 42))     # subject's right eye, image-left
DLIB68_EYE_LEFT = tuple(range(42, 48))
DLIB68_NOSE_BRIDGE_TOP, DLIB68_NOSE_TIP = 27, 30
DLIB68_MOUTH_RIGHT, DLIB68_MOUTH_LEFT = 48, 54
DLIB68_CHEEK_RIGHT, DLIB68_CHEEK_LEFT = 1, 15   # jaw points at nose-bridge height
DLIB68_JAW_RIGHT, DLIB68_JAW_LEFT = 4, 12       # jaw points just below the mouth corners
DLIB68_CHIN = 8

# MediaPipe face mesh (468 / 478 points).
MESH_EYE_RIGHT = (33, 133)                      # outer, inner corner of the image-left eye
MESH_EYE_LEFT = (362, 263)
MESH_NOSE_TIP, MESH_NOSE_BRIDGE = 1, 197        # 197 sits between 168 (glabella) and the tip
MESH_MOUTH_RIGHT, MESH_MOUTH_LEFT = 61, 291
MESH_CHEEK_RIGHT, MESH_CHEEK_LEFT = 93, 323
MESH_JAW_RIGHT, MESH_JAW_LEFT = 172, 397
MESH_CHIN = 152

_KNOWN_COUNTS = (5, 68, 468, 478)


class LandmarkError(MaskEdgeError):
    """Landmarks have the wrong shape, are not finite, or do not describe an upright-ish face."""


@dataclass(frozen=True)
class FaceShape:
    """A coarse 3-D face used to place the mask from five points.

    Horizontal positions are (X, Z) points in units of the true eye distance (X to the image
    right, Z toward the camera, origin between the eyes), turned by the yaw angle implied by the
    nose offset and projected orthographically; vertical positions are multiples of the
    eye-mouth distance ``h``, which yaw does not foreshorten.

    Attributes:
        nose_depth: Z of the nose tip; the yaw cue r (nose offset / eye distance) is
            ``nose_depth * tan(yaw)``, which gives the angle.
        bridge_depth: Z of b, on the nose bridge.
        bridge_level: b's depth below the eye line as a fraction of the nose tip's depth (that
            depth averaged with a frontal face's, half the eye-mouth distance).
        corner_drop: a/c lie this far (in ``h``) below b, like the anchors of the templates.
        cheek_half_width, cheek_depth: X (each side) and Z of a/c on the cheeks.
        jaw_half_width, jaw_depth: X and Z of d/f on the jaw.
        jaw_below_mouth: d/f depth below the mouth line, in ``h``.
        chin_depth: Z of e.
        chin_below_mouth: e's depth below the mouth line, in ``h``.
        eye_mouth_to_width: eye distance / eye-mouth distance of a frontal face (ArcFace
            template); bounds the scale when the eyes are foreshortened more than the nose says.
        max_yaw_degrees: the yaw angle is clipped here; beyond it the cue is unreliable.
    """

    nose_depth: float = 0.45
    bridge_depth: float = 0.3
    bridge_level: float = 0.5
    corner_drop: float = 0.25
    cheek_half_width: float = 1.1
    cheek_depth: float = -0.6
    jaw_half_width: float = 0.95
    jaw_depth: float = -0.6
    jaw_below_mouth: float = 0.25
    chin_depth: float = 0.1
    chin_below_mouth: float = 0.75
    eye_mouth_to_width: float = 0.87
    max_yaw_degrees: float = 60.0


def check_landmarks(points: np.ndarray) -> np.ndarray:
    """Validate a landmark array and return it as float64 (N, 2).

    Args:
        points: (5, 2), (68, 2), (468, 2) or (478, 2) image points; extra columns (z) are dropped.

    Returns:
        The points as a float64 (N, 2) array.

    Raises:
        LandmarkError: wrong shape or non-finite values.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] not in _KNOWN_COUNTS or arr.shape[1] < 2:
        raise LandmarkError(
            f"landmarks of shape {arr.shape} not understood: pass (5, 2) ArcFace/YuNet points, "
            "(68, 2) dlib points or (468, 2)/(478, 2) MediaPipe face-mesh points"
        )
    arr = arr[:, :2]
    if not np.all(np.isfinite(arr)):
        raise LandmarkError("landmarks contain NaN or infinity: the detector output is invalid")
    return arr


def five_points(points: np.ndarray) -> np.ndarray:
    """Reduce any understood landmark set to the five ArcFace points.

    Args:
        points: see :func:`check_landmarks`.

    Returns:
        (5, 2) float64: right eye, left eye, nose tip, right and left mouth corner.

    Raises:
        LandmarkError: see :func:`check_landmarks`.
    """
    pts = check_landmarks(points)
    if len(pts) == 5:
        return pts
    if len(pts) == 68:
        return np.stack([
            pts[list(DLIB68_EYE_RIGHT)].mean(0), pts[list(DLIB68_EYE_LEFT)].mean(0),
            pts[DLIB68_NOSE_TIP], pts[DLIB68_MOUTH_RIGHT], pts[DLIB68_MOUTH_LEFT],
        ])
    return np.stack([
        pts[list(MESH_EYE_RIGHT)].mean(0), pts[list(MESH_EYE_LEFT)].mean(0),
        pts[MESH_NOSE_TIP], pts[MESH_MOUTH_RIGHT], pts[MESH_MOUTH_LEFT],
    ])


def _frame(five: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Face frame: origin at the eye midpoint, x along the eyes, y down the face.

    Returns:
        ``(origin, ex, ey, eye_distance, eye_mouth)``; ``eye_mouth`` is measured along ``ey``.
    """
    eye_vec = five[1] - five[0]
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        raise LandmarkError("both eye landmarks are at the same place: the detection is invalid")
    ex = eye_vec / eye_dist
    ey = np.array([-ex[1], ex[0]])  # x rotated +90 degrees: "down" in image coordinates
    origin = (five[0] + five[1]) / 2
    eye_mouth = float(((five[3] + five[4]) / 2 - origin) @ ey)
    if eye_mouth <= 0.1 * eye_dist:
        raise LandmarkError(
            "the mouth is not below the eyes in these landmarks: check the point order (right "
            "eye, left eye, nose, right mouth corner, left mouth corner) and that x comes first"
        )
    return origin, ex, ey, eye_dist, eye_mouth


def estimate_yaw(points: np.ndarray) -> float:
    """Signed yaw cue: nose-tip offset from the eye midpoint along the eye line / eye distance.

    About ``FaceShape.nose_depth`` (0.45) * tan(yaw angle) for a typical face. Negative: the
    nose points to image-left (the face is turned toward image-left, the side view MaskTheFace
    calls ``left``: its nose bridge anchor b lies toward image-left).

    Args:
        points: any understood landmark set.

    Returns:
        The normalised offset (0 for a frontal face).

    Raises:
        LandmarkError: invalid landmarks.
    """
    five = five_points(points)
    origin, ex, _, eye_dist, _ = _frame(five)
    return float((five[2] - origin) @ ex / eye_dist)


def choose_view(yaw: float, threshold: float = 0.12) -> str:
    """Pick the template view for a yaw cue from :func:`estimate_yaw`.

    Args:
        yaw: the normalised nose offset.
        threshold: |yaw| above which a side view is used (0.12 is about 15 degrees).

    Returns:
        ``left`` if ``yaw < -threshold``, ``right`` if ``yaw > threshold``, else ``front``.
    """
    if yaw < -threshold:
        return "left"
    if yaw > threshold:
        return "right"
    return "front"


def targets_from_five(five: np.ndarray, shape: FaceShape = FaceShape()) -> np.ndarray:
    """Target points a..f from the five ArcFace points.

    Args:
        five: (5, 2) points in ArcFace order.
        shape: face proportions.

    Returns:
        (6, 2) float32 image points for anchors a..f.

    Raises:
        LandmarkError: invalid landmarks.
    """
    five = check_landmarks(five)
    origin, ex, ey, eye_dist, h = _frame(five)
    local = (five - origin) @ np.stack([ex, ey]).T
    nose_y = local[2, 1]
    mouth_y = (local[3, 1] + local[4, 1]) / 2
    limit = np.radians(shape.max_yaw_degrees)
    angle = float(np.clip(np.arctan(local[2, 0] / eye_dist / shape.nose_depth), -limit, limit))
    cos, sin = np.cos(angle), np.sin(angle)
    # The measured eye distance is the true one times cos(yaw); undo that, but never let the
    # face get narrower than its eye-mouth distance implies (noisy nose, pitched head).
    scale = max(eye_dist / cos, shape.eye_mouth_to_width * h)
    project = lambda x, z: scale * (x * cos + z * sin)  # noqa: E731
    # A pitched head moves the protruding nose tip toward the eye line more than the bridge;
    # averaging its depth with the frontal one (half the eye-mouth distance) keeps b off the eyes.
    y_b = shape.bridge_level * 0.5 * (nose_y + 0.5 * h)
    y_ac = y_b + shape.corner_drop * h
    y_df = mouth_y + shape.jaw_below_mouth * h
    local_targets = np.array([
        [project(-shape.cheek_half_width, shape.cheek_depth), y_ac],
        [project(0.0, shape.bridge_depth), y_b],
        [project(shape.cheek_half_width, shape.cheek_depth), y_ac],
        [project(-shape.jaw_half_width, shape.jaw_depth), y_df],
        [project(0.0, shape.chin_depth), mouth_y + shape.chin_below_mouth * h],
        [project(shape.jaw_half_width, shape.jaw_depth), y_df],
    ])
    return (origin + local_targets[:, :1] * ex + local_targets[:, 1:] * ey).astype(np.float32)


def targets_from_dlib68(points: np.ndarray) -> np.ndarray:
    """Target points a..f from dlib's 68 landmarks.

    b is halfway down the nose bridge (27 -> 30); a / c are jaw points 1 / 15, d / f jaw points
    4 / 12, e the chin (8).

    Args:
        points: (68, 2) image points, 0-based dlib order.

    Returns:
        (6, 2) float32 image points.

    Raises:
        LandmarkError: wrong shape or non-finite values.
    """
    pts = check_landmarks(points)
    if len(pts) != 68:
        raise LandmarkError(f"expected (68, 2) dlib landmarks, got {len(pts)} points")
    bridge = (pts[DLIB68_NOSE_BRIDGE_TOP] + pts[DLIB68_NOSE_TIP]) / 2
    return np.stack([
        pts[DLIB68_CHEEK_RIGHT], bridge, pts[DLIB68_CHEEK_LEFT],
        pts[DLIB68_JAW_RIGHT], pts[DLIB68_CHIN], pts[DLIB68_JAW_LEFT],
    ]).astype(np.float32)


def targets_from_mesh468(points: np.ndarray) -> np.ndarray:
    """Target points a..f from the MediaPipe face mesh.

    b is bridge point 197; a / c the face-oval points 93 / 323; d / f 172 / 397; e the chin 152.

    Args:
        points: (468, 2) or (478, 2) image points.

    Returns:
        (6, 2) float32 image points.

    Raises:
        LandmarkError: wrong shape or non-finite values.
    """
    pts = check_landmarks(points)
    if len(pts) not in (468, 478):
        raise LandmarkError(f"expected (468, 2) face-mesh landmarks, got {len(pts)} points")
    return pts[[MESH_CHEEK_RIGHT, MESH_NOSE_BRIDGE, MESH_CHEEK_LEFT,
                MESH_JAW_RIGHT, MESH_CHIN, MESH_JAW_LEFT]].astype(np.float32)


def mask_targets(points: np.ndarray, shape: FaceShape = FaceShape()) -> np.ndarray:
    """Target points a..f from any understood landmark set (dispatch on the point count).

    Args:
        points: (5, 2), (68, 2), (468, 2) or (478, 2) image points.
        shape: proportions for the five-point path.

    Returns:
        (6, 2) float32 image points.

    Raises:
        LandmarkError: invalid landmarks.
    """
    pts = check_landmarks(points)
    if len(pts) == 5:
        return targets_from_five(pts, shape)
    if len(pts) == 68:
        return targets_from_dlib68(pts)
    return targets_from_mesh468(pts)
