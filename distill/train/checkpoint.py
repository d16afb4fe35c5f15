"""Checkpoints: written atomically on rank 0, read back for exact resume.

A checkpoint holds the student, the loss terms (margin heads own weights), optimizer,
scheduler, AMP scaler, epoch, global step, the configuration and every random generator's
state, so a resumed run continues exactly where the uninterrupted one would be.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import ModelFileError


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` on CPU (tensors and plain data only).

    Raises:
        ModelFileError: missing, unreadable or not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} not found: pass RUN/last.pt of an earlier run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ModelFileError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise ModelFileError(f"{path} is not a distillation checkpoint (no 'model' entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Every generator a step may draw from: Python, NumPy's global one, torch CPU and CUDA."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
             "python_gauss": random.getstate()[2],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_student(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The student of a distillation checkpoint, in ``eval()`` mode, and its description.

    Returns:
        ``(model, spec)``; ``spec`` holds ``name`` (the registered model), ``embedding_size``,
        ``input`` (rgb, mean 127.5, std 127.5, 112x112), the ``teacher`` and the ``epoch``.

    Raises:
        ModelFileError: missing or foreign file.
    """
    from distill.registry import create_model

    state = load_checkpoint(path)
    spec = dict(state["student"])
    model = create_model(spec["name"], embedding_size=spec["embedding_size"])
    model.load_state_dict(state["model"])
    spec.update(teacher=state.get("teacher"), epoch=state["epoch"])
    return model.eval(), spec
