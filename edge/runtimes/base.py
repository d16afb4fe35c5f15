"""The one runtime-backend interface: load a carded model file, embed aligned face crops."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from edge.errors import ImageError

log = logging.getLogger(__name__)


class Runtime(ABC):
    """An embedding model executed by one inference runtime.

    Subclasses implement ``_open`` (create the session/interpreter once) and ``_infer``
    (run one tensor batch, laid out as the card says). This base class does what every
    runtime shares: pre-processing from the card, padding to a fixed graph batch,
    chunking and L2 normalisation.
    """

    name: str = "base"
    suffixes: tuple[str, ...] = ()

    def __init__(self, path: Path, card: ModelCard, threads: int | None = None) -> None:
        self.path = Path(path)
        self.card = card
        self.threads = threads
        self._open()

    @classmethod
    def from_path(cls, path: Path, card: ModelCard, threads: int | None = None) -> Runtime:
        """Open ``path`` with this runtime, fed as ``card`` says."""
        return cls(path, card, threads)

    @abstractmethod
    def _open(self) -> None:
        """Create the session or interpreter; raise ``ModelFileError`` if it cannot be read."""

    @abstractmethod
    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the graph on a float32 tensor in the card's layout; return (N, D)."""

    # ---- shared behaviour ---------------------------------------------------------------
    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        """Turn aligned BGR uint8 crops (N, H, W, 3) into the model's input tensor."""
        faces = np.asarray(faces)
        spec = self.card.input
        want = (spec.size[0], spec.size[1], 3)
        if faces.ndim == 3:
            faces = faces[None]
        if faces.ndim != 4 or faces.shape[1:] != want:
            raise ImageError(
                f"{self.card.name} expects aligned crops of shape (N, {want[0]}, {want[1]}, 3), "
                f"got {faces.shape}: align faces with edge.align first"
            )
        x = faces.astype(np.float32)
        if spec.color == "rgb":
            x = x[..., ::-1]
        elif spec.color == "gray":
            gray = x @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights
            x = np.repeat(gray[..., None], 3, axis=-1)
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        if spec.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def embed(self, faces: np.ndarray, normalize: bool = True) -> np.ndarray:
        """Embed aligned BGR uint8 crops (N, H, W, 3) -> float32 (N, D), L2-normalised."""
        tensor = self.preprocess(faces)
        fixed = self.card.input.batch
        if fixed:
            out = np.concatenate([self._infer_padded(tensor[i : i + fixed], fixed)
                                  for i in range(0, len(tensor), fixed)])
        else:
            out = self._infer(tensor)
        out = np.asarray(out, np.float32).reshape(len(tensor), -1)
        return l2_normalize(out) if normalize else out

    def _infer_padded(self, chunk: np.ndarray, fixed: int) -> np.ndarray:
        # Graphs exported with a fixed batch (e.g. MobileFaceNet.tflite takes exactly 2)
        # get zero padding; the padded rows are dropped again.
        n = len(chunk)
        if n < fixed:
            pad = np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        return np.asarray(self._infer(chunk)).reshape(fixed, -1)[:n]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, threads={self.threads})"


def l2_normalize(x: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """Row-wise L2 normalisation."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
