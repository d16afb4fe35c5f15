"""Anything that embeds faces, behind one call: a carded model file run by an edge runtime,
a zoo name, or a PyTorch checkpoint (torch imported only in that case)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.card import ModelCard, sha256_file

TORCH_SUFFIXES = (".pt", ".pth")


@dataclass
class Embedder:
    """A named embedding function with the hash that keys its caches."""

    name: str
    sha256: str
    embed: Callable[[np.ndarray], np.ndarray]
    card: ModelCard | None
    runtime: str
    path: Path | None = None


def open_embedder(spec: str, runtime: str | None = None, threads: int | None = None) -> Embedder:
    """Open a zoo name, a carded model file or a PyTorch checkpoint for evaluation.

    Raises:
        ConfigError, ModelFileError, ModelCardError: as the underlying loaders.
    """
    if Path(spec).suffix in TORCH_SUFFIXES:
        return _torch_embedder(Path(spec), threads)
    from edge.runtimes import load_model
    from edge.zoo import resolve_model

    path = resolve_model(spec)
    net = load_model(path, runtime=runtime, threads=threads)
    return Embedder(net.card.name, net.card.sha256, net.embed, net.card, type(net).name, path)


def _torch_embedder(path: Path, threads: int | None) -> Embedder:
    from distill.train.checkpoint import load_student  # torch, lazily

    model, spec = load_student(path)
    if threads:
        import torch

        torch.set_num_threads(threads)

    def embed(crops: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1], np.float32))  # BGR->RGB
        x = ((x - 127.5) / 127.5).permute(0, 3, 1, 2)
        with torch.inference_mode():
            return model(x).float().numpy()

    return Embedder(spec.get("name", path.stem), sha256_file(path), embed, None, "torch", path)
