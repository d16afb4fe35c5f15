"""Frozen teachers and their cached templates.

A teacher embeds aligned uint8 BGR crops into L2-normalised float32 templates. Two kinds sit in
one ``TEACHERS`` registry:

- carded models run by an ``edge`` runtime (``sface``, ``sface-openvino``,
  ``mobilefacenet-tflite``, ... or ``file`` with a ``.onnx``/``.xml``/``.tflite`` path);
- PyTorch models from ``distill.models`` (``iresnet50``, ``iresnet100``, ``senet50_ffr``, ...)
  loaded from a checkpoint (``path``) in a ``distill.models.checkpoints`` layout, run in
  ``eval()`` under ``no_grad()``.

Templates are computed once per (face set, teacher file) and kept as a memory-mapped float32
``(N, 2, D)`` array, ``[:, 0]`` of the crop and ``[:, 1]`` of its mirror image; the teacher
file's sha256 is part of the cache name, so another checkpoint never reuses stale templates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distill.registry import Registry
from edge.errors import ConfigError

log = logging.getLogger(__name__)

TEACHERS: Registry[Callable[..., "Teacher"]] = Registry("teacher")
RUNTIME_TEACHERS = ("sface", "sface-fp32", "sface-openvino", "mobilefacenet-tflite",
                    "mobilefacenet-openvino")
# (model name, default checkpoint layout) of the PyTorch teachers.
TORCH_TEACHERS = {
    "iresnet18": "insightface_iresnet", "iresnet34": "insightface_iresnet",
    "iresnet50": "insightface_iresnet", "iresnet100": "insightface_iresnet",
    "senet50": "ffr_se50", "senet50_ffr": "ffr_se50", "iresnet_tiny": "maskedge",
}


class Teacher(ABC):
    """A frozen face embedder. ``name``, ``dim`` and ``sha256`` (of the weights file) identify it."""

    name: str
    dim: int
    sha256: str

    @abstractmethod
    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Aligned uint8 BGR crops (N, 112, 112, 3) -> L2-normalised float32 (N, dim)."""


class RuntimeTeacher(Teacher):
    """A carded model (zoo name or file) run by an ``edge`` runtime."""

    def __init__(self, spec: str, threads: int | None = None, runtime: str | None = None) -> None:
        from edge.runtimes import load_model
        from edge.zoo import resolve_model

        self.net = load_model(resolve_model(spec), runtime=runtime, threads=threads)
        self.name = self.net.card.name
        self.dim = int(self.net.card.embedding_size)
        self.sha256 = self.net.card.sha256

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self.net.embed(np.asarray(crops))


class TorchTeacher(Teacher):
    """A ``distill.models`` network with released weights, frozen.

    Args:
        model: registered model name.
        path: checkpoint file.
        layout: checkpoint layout (``distill.models.checkpoints.LAYOUTS``).
        mean, std: input normalisation of RGB pixels (insightface: 127.5, 127.5).
    """

    def __init__(self, model: str, path: str | os.PathLike | None, layout: str,
                 mean: float = 127.5, std: float = 127.5, device: str = "cpu") -> None:
        import torch

        from distill.models.checkpoints import load_official_checkpoint
        from distill.registry import create_model

        if path is None:
            raise ConfigError(f"teacher {model!r} is a PyTorch model and needs its weights: set "
                              "teacher.path to a checkpoint file (e.g. ElasticFace's backbone.pth)")
        self.net = create_model(model)
        load_official_checkpoint(self.net, path, layout)
        self.net.eval().requires_grad_(False).to(device)
        self.device, self.mean, self.std = torch.device(device), mean, std
        self.name = model
        self.sha256 = _sha256(path)
        with torch.no_grad():
            self.dim = int(self.net(torch.zeros(2, 3, 112, 112, device=self.device)).shape[1])

    def embed(self, crops: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(np.asarray(crops)[..., ::-1]))
        x = (x.permute(0, 3, 1, 2).float().to(self.device) - self.mean) / self.std
        with torch.no_grad():
            out = torch.nn.functional.normalize(self.net(x), dim=1)
        return out.cpu().numpy().astype(np.float32)


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _runtime_builder(spec: str) -> Callable[..., Teacher]:
    def build(path: str | None = None, layout: str | None = None, threads: int | None = None,
              device: str = "cpu") -> Teacher:
        return RuntimeTeacher(spec, threads=threads)

    build.__doc__ = f"The carded zoo model {spec!r} through its edge runtime."
    return build


def _torch_builder(model: str, default_layout: str) -> Callable[..., Teacher]:
    def build(path: str | None = None, layout: str | None = None, threads: int | None = None,
              device: str = "cpu") -> Teacher:
        return TorchTeacher(model, path, layout or default_layout, device=device)

    build.__doc__ = f"distill.models {model!r} with weights from ``path`` (layout {default_layout})."
    return build


for _spec in RUNTIME_TEACHERS:
    TEACHERS.register(_spec)(_runtime_builder(_spec))
for _model, _layout in TORCH_TEACHERS.items():
    TEACHERS.register(_model)(_torch_builder(_model, _layout))


@TEACHERS.register("file")
def _file_teacher(path: str | None = None, layout: str | None = None, threads: int | None = None,
                  device: str = "cpu") -> Teacher:
    """Any carded model file (.onnx / .xml / .tflite with its .card.json beside it)."""
    if path is None:
        raise ConfigError("teacher 'file' needs teacher.path: a carded .onnx, .xml or .tflite file")
    return RuntimeTeacher(str(path), threads=threads)


def create_teacher(name: str, **kwargs: Any) -> Teacher:
    """Build the teacher registered as ``name`` (kwargs: path, layout, threads, device).

    Raises:
        UnknownNameError: unknown name (the message lists the teachers).
        ConfigError, ModelFileError: missing or unreadable weights.
    """
    return TEACHERS.create(name, **kwargs)


def list_teachers() -> list[str]:
    """Names ``create_teacher`` accepts."""
    return TEACHERS.names()


def template_cache_path(teacher: Teacher, faces_key: str, cache: str | os.PathLike) -> Path:
    """Where the templates of ``teacher`` over the face set ``faces_key`` are cached."""
    return Path(cache) / f"{faces_key}--{teacher.name}-{teacher.sha256[:16]}.npy"


def teacher_templates(teacher: Teacher, crops: np.ndarray, faces_key: str,
                      cache: str | os.PathLike, batch_size: int = 64,
                      progress: bool = True) -> np.ndarray:
    """Templates of every crop and its mirror image, computed once and memory-mapped after.

    Args:
        teacher: the frozen teacher.
        crops: uint8 (N, 112, 112, 3) aligned crops (a FaceSet's).
        faces_key: the face set's content key (part of the cache name).
        cache: folder of template caches.
        batch_size: crops per teacher call.
        progress: show a tqdm bar while computing.

    Returns:
        float32 (N, 2, D), read-only memory map: ``[i, 0]`` crop ``i``, ``[i, 1]`` its mirror.
    """
    path = template_cache_path(teacher, faces_key, cache)
    if path.is_file():
        log.info("reusing teacher templates %s", path)
        return np.load(path, mmap_mode="r")
    from tqdm import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, "w+", np.float32, (len(crops), 2, teacher.dim))
    for start in tqdm(range(0, len(crops), batch_size), desc=f"teacher {teacher.name}",
                      unit="batch", disable=not progress, dynamic_ncols=True):
        batch = np.asarray(crops[start:start + batch_size])
        both = teacher.embed(np.concatenate([batch, batch[:, :, ::-1]]))
        out[start:start + len(batch), 0] = both[: len(batch)]
        out[start:start + len(batch), 1] = both[len(batch):]
    out.flush()
    del out
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(
        {"teacher": teacher.name, "sha256": teacher.sha256, "dim": teacher.dim,
         "faces": faces_key, "rows": len(crops)}, indent=1))
    return np.load(path, mmap_mode="r")
