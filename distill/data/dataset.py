"""Training samples for template-level distillation (MaskInv): masked student input, and the
key of the teacher template to pull it toward.

Sample ``i`` of epoch ``e`` draws every random choice (flip, mask or not, mask template and
colour, grey, brightness, contrast) from ``numpy.random.default_rng((seed, e, row))``: the same
pixels whatever the worker, rank or resume point, so a resumed run sees exactly what an
uninterrupted one would. The teacher saw the *unmasked* crop, flipped or not, so a sample
names its template as ``(row, flip)``; the other augmentations are left for the student to
become invariant to.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from distill.data.faces import FaceSet
from edge.errors import ConfigError

# Mirroring swaps the subject's left and right: eyes 0<->1, mouth corners 3<->4.
FLIP_ORDER = [1, 0, 2, 4, 3]
MEAN, STD = 127.5, 127.5


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample augmentation of the student's input.

    Attributes:
        mask_prob: chance a sample gets a synthetic mask (the rest stay unmasked, so the
            student keeps its unmasked accuracy).
        flip_prob: chance of a horizontal flip (the teacher template of the flipped crop is used).
        grayscale_prob: chance the input is turned grey (LFW here is grey; UTKFace is colour).
        brightness: gain drawn uniformly in ``1 +- brightness``.
        contrast: contrast factor drawn uniformly in ``1 +- contrast``.
    """

    mask_prob: float = 0.8
    flip_prob: float = 0.5
    grayscale_prob: float = 0.3
    brightness: float = 0.2
    contrast: float = 0.2

    def __post_init__(self) -> None:
        for name in ("mask_prob", "flip_prob", "grayscale_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {value}")


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 BGR crops (N, H, W, 3) or (H, W, 3) -> float32 RGB NCHW / CHW, (x - 127.5) / 127.5.

    The student's input convention (insightface's, and ``benchmarks.embedders``' for PyTorch
    checkpoints): a card for an exported student says rgb, mean 127.5, std 127.5.
    """
    x = np.asarray(crops)[..., ::-1]
    x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x.transpose(2, 0, 1)
    # numpy, not torch: per-sample torch ops pay thread start-up costs that dominate here
    return torch.from_numpy((x.astype(np.float32) - MEAN) / STD)


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the mirrored crop, in the detector's (subject-relative) order."""
    flipped = points.copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    return flipped[FLIP_ORDER]


class MaskedFaceDataset(Dataset):
    """Augmented, optionally masked crops of a prepared face set.

    Args:
        faces: the prepared set.
        rows: which rows of ``faces`` this dataset serves (e.g. after near-duplicate removal).
        augment: augmentation settings.
        seed: base seed of every per-sample generator.
        labels: optional int64 identity label per entry of ``rows`` (margin heads).
        renderer: the mask renderer; default the templates pre-scaled for 112x112 crops.

    ``__getitem__`` returns a dict: ``image`` (float32 CHW tensor), ``row`` and ``flip``
    (the teacher-template key), ``masked`` (bool) and ``label`` (-1 when unlabelled).
    """

    def __init__(self, faces: FaceSet, rows: np.ndarray, augment: AugmentConfig, seed: int,
                 labels: np.ndarray | None = None, renderer=None) -> None:
        self.faces = faces
        self.rows = np.asarray(rows, np.int64)
        self.augment = augment
        self.seed = int(seed)
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        if self.labels is not None and len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.labels)} labels for {len(self.rows)} rows")
        self._renderer = renderer
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def sample(self, index: int) -> tuple[np.ndarray, int, int, bool]:
        """The augmented uint8 BGR crop of entry ``index``, its row, its flip bit and whether
        it is masked (the un-tensored form of ``__getitem__``, for inspection)."""
        row = int(self.rows[index])
        rng = np.random.default_rng((self.seed, self.epoch, row))
        aug = self.augment
        flip = bool(rng.random() < aug.flip_prob)
        masked = bool(rng.random() < aug.mask_prob)
        grey = bool(rng.random() < aug.grayscale_prob)
        gain = 1.0 + rng.uniform(-1.0, 1.0) * aug.brightness
        contrast = 1.0 + rng.uniform(-1.0, 1.0) * aug.contrast
        image = np.asarray(self.faces.crops[row])
        points = self.faces.landmarks[row]
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
            points = flip_landmarks(points, image.shape[1])
        if masked:
            image, _ = self.renderer.render(image, points, rng)
        if grey:
            image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        if gain != 1.0 or contrast != 1.0:
            x = image.astype(np.float32)
            x = (x - x.mean()) * contrast + x.mean()
            image = np.clip(x * gain + 0.5, 0, 255).astype(np.uint8)
        return image, row, int(flip), masked

    def __getitem__(self, index: int) -> dict:
        image, row, flip, masked = self.sample(index)
        label = -1 if self.labels is None else int(self.labels[index])
        return {"image": to_tensor(image), "row": row, "flip": flip, "masked": masked, "label": label}

    @property
    def renderer(self):
        if self._renderer is None:
            from distill.data.masking import crop_renderer

            self._renderer = crop_renderer(self.faces.crops.shape[1])
        return self._renderer
