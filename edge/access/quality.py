"""Quality gate: skip faces too small, too blurred or too turned to be judged fairly.

A face that fails the gate is not scored at all: a tiny or blurred face gives a low score
that would read as "unknown person", and the audit log should say instead that the face
was not usable and why (``quality:too_small``, ``quality:blurry``, ``quality:pose``).

Size and pose are checked on the detection (before alignment, to save the work); blur is
measured on the aligned crop, because there every face has the same scale, so one
threshold fits near and far faces alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge.errors import ConfigError

TOO_SMALL = "quality:too_small"
BLURRY = "quality:blurry"
POSE = "quality:pose"
# Depth of the nose tip in front of the eye plane, in inter-ocular distances; a typical
# adult value. It turns the nose's sideways shift into a yaw angle (a coarse estimate).
NOSE_DEPTH_RATIO = 0.5


@dataclass(frozen=True)
class QualityConfig:
    """Limits of the quality gate.

    Attributes:
        min_face_px: minimum of the detection box's width and height, in frame pixels.
        min_sharpness: minimum variance of the Laplacian of the aligned grey crop.
        max_yaw_deg: maximum head turn left/right, estimated from the 5 landmarks.
        max_roll_deg: maximum in-plane tilt (the eye line's angle).
    """

    min_face_px: float = 40.0
    min_sharpness: float = 20.0
    max_yaw_deg: float = 45.0
    max_roll_deg: float = 30.0

    def __post_init__(self) -> None:
        if self.min_face_px < 0 or self.min_sharpness < 0:
            raise ConfigError("min_face_px and min_sharpness must be >= 0")
        if not 0 < self.max_yaw_deg <= 90 or not 0 < self.max_roll_deg <= 180:
            raise ConfigError("max_yaw_deg must be in (0, 90] and max_roll_deg in (0, 180]")


@dataclass(frozen=True)
class QualityReport:
    """What the gate measured and, if the face failed, why.

    Attributes:
        reason: ``None`` when the face passed, else ``quality:<check>``.
        detail: a human-readable explanation with the measured value and the limit.
    """

    face_px: float
    yaw_deg: float
    roll_deg: float
    sharpness: float | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the face passed every check made so far."""
        return self.reason is None


def estimate_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """Coarse yaw and roll, in degrees, from five landmarks (YuNet/ArcFace order).

    Roll is the angle of the line from the subject's right eye to the left eye. Yaw comes
    from how far the nose tip sits off the face's centre line (midway between the eye and
    mouth midpoints), measured in the de-rolled frame relative to the eye distance.

    Args:
        landmarks: (5, 2) right eye, left eye, nose tip, right and left mouth corner.

    Returns:
        (yaw_deg, roll_deg); the sign of yaw tells the direction, 0 is frontal.

    Raises:
        ValueError: landmarks are not (5, 2) or the eyes coincide.
    """
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {points.shape}")
    eye_vec = points[1] - points[0]
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        raise ValueError("the two eye landmarks coincide: not a face detection")
    roll = math.atan2(eye_vec[1], eye_vec[0])
    cos, sin = math.cos(-roll), math.sin(-roll)
    upright = points @ np.array([[cos, sin], [-sin, cos]])  # rotate by -roll
    centre_x = (upright[0:2, 0].mean() + upright[3:5, 0].mean()) / 2.0
    shift = (upright[2, 0] - centre_x) / eye_dist
    yaw = math.degrees(math.atan(shift / NOSE_DEPTH_RATIO))
    return yaw, math.degrees(roll)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a grey version of ``crop`` (higher is sharper)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def check_face(box: tuple[float, float, float, float], landmarks: np.ndarray,
               config: QualityConfig) -> QualityReport:
    """Size and pose checks on a detection (before alignment).

    Args:
        box: (x, y, w, h) of the detection.
        landmarks: its (5, 2) landmarks.
        config: the limits.

    Returns:
        A report; ``reason`` is set when a check failed.
    """
    face_px = float(min(box[2], box[3]))
    try:
        yaw, roll = estimate_pose(landmarks)
    except ValueError as err:
        return QualityReport(face_px, math.nan, math.nan, reason=POSE, detail=str(err))
    report = QualityReport(face_px, yaw, roll)
    if face_px < config.min_face_px:
        return replace(report, reason=TOO_SMALL,
                       detail=f"face {face_px:.0f} px < minimum {config.min_face_px:.0f} px")
    if abs(yaw) > config.max_yaw_deg or abs(roll) > config.max_roll_deg:
        return replace(report, reason=POSE,
                       detail=f"yaw {yaw:.0f} deg, roll {roll:.0f} deg (limits "
                              f"{config.max_yaw_deg:.0f}, {config.max_roll_deg:.0f})")
    return report


def check_crop(report: QualityReport, crop: np.ndarray, config: QualityConfig) -> QualityReport:
    """Add the blur check on the aligned crop to a passing report."""
    value = sharpness(crop)
    report = replace(report, sharpness=value)
    if report.ok and value < config.min_sharpness:
        return replace(report, reason=BLURRY,
                       detail=f"sharpness {value:.1f} < minimum {config.min_sharpness:.1f} "
                              "(variance of Laplacian): hold still or improve the light")
    return report
