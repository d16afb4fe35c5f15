"""The PyTorch FP32 student every export is made from and checked against.

``load_student`` reads a checkpoint in either of two layouts:

- a distillation run's ``RUN/last.pt`` (``distill/train``): ``{'model': state_dict,
  'student': {'name', 'embedding_size', 'input': {'color', 'mean', 'std', 'size'}},
  'config': {...}}``;
- a plain file: ``{'model': state_dict, 'arch': name, 'embedding_size': D}`` (what
  ``save_student`` writes; ``input`` optional).

The student's input convention (colour order, mean, std) comes from the checkpoint; when it
is not recorded, the kit's training convention is used (RGB, (x - 127.5) / 127.5). The
reference pre-processing here is torch code of its own, not the edge runtimes' numpy code, so a
card that disagrees with training (wrong colour order, wrong normalisation) shows up as a
parity failure instead of being copied into both sides.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge.card import InputSpec, sha256_file
from edge.errors import ModelFileError

log = logging.getLogger(__name__)
TRAINING_INPUT = InputSpec()  # rgb, nchw, mean 127.5, std 127.5 (distill.data.dataset.to_tensor)
GRAY_WEIGHTS_BGR = (0.114, 0.587, 0.299)


@dataclass(frozen=True)
class Student:
    """An FP32 embedding model in eval mode and how faces are fed to it.

    Attributes:
        model: the ``nn.Module`` (eval mode, CPU).
        arch: its registry name (``distill.create_model``).
        embedding_size: output dimension.
        input: the training-time input convention (layout always ``nchw`` here).
        name: a short name for cards and file names (the run's name or the file's stem).
        checkpoint: the file it came from (None for an in-memory model).
        checkpoint_sha256: that file's sha256.
        licence: the licence recorded with the weights ("unknown" when not recorded).
    """

    model: nn.Module
    arch: str
    embedding_size: int
    input: InputSpec = TRAINING_INPUT
    name: str = "student"
    checkpoint: Path | None = None
    checkpoint_sha256: str | None = None
    licence: str = "unknown"

    def to_tensor(self, faces: np.ndarray) -> torch.Tensor:
        """Aligned uint8 BGR crops (N, H, W, 3) -> the float32 NCHW tensor the model was trained on."""
        x = torch.from_numpy(np.ascontiguousarray(faces)).float()
        if x.ndim == 3:
            x = x[None]
        if self.input.color == "rgb":
            x = x.flip(-1)
        elif self.input.color == "gray":
            x = (x @ torch.tensor(GRAY_WEIGHTS_BGR))[..., None].expand(*x.shape[:-1], 3)
        x = (x - torch.tensor(self.input.mean)) / torch.tensor(self.input.std)
        return x.permute(0, 3, 1, 2).contiguous()

    @torch.inference_mode()
    def embed(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """L2-normalised float32 embeddings (N, D) of aligned uint8 BGR crops."""
        rows = [self.model(self.to_tensor(faces[i:i + batch])).float().numpy()
                for i in range(0, len(faces), batch)]
        out = np.concatenate(rows)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-10)


def load_student(path: str | Path) -> Student:
    """Read a checkpoint (either layout, see the module docstring) into an eval-mode Student.

    Raises:
        ModelFileError: the file is missing, unreadable, or names no known architecture,
            or its weights do not fit that architecture.
    """
    from distill.models.checkpoints import load_official_checkpoint, read_checkpoint
    from distill.registry import create_model

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} not found: pass a training run's checkpoint, "
                             "e.g. --checkpoint runs/distill/<run>/last.pt")
    raw = read_checkpoint(path)
    if not isinstance(raw, dict) or "model" not in raw:
        raise ModelFileError(f"{path} is not a student checkpoint: expected a dict with a 'model' "
                             "state_dict (a distill run's last.pt, or {'model', 'arch', "
                             "'embedding_size'})")
    meta = _student_meta(raw, path)
    model = create_model(meta["arch"], embedding_size=meta["embedding_size"])
    load_official_checkpoint(model, path, "maskedge")
    model.eval()
    return Student(model=model, arch=meta["arch"], embedding_size=meta["embedding_size"],
                   input=meta["input"], name=meta["name"], checkpoint=path,
                   checkpoint_sha256=sha256_file(path), licence=meta["licence"])


def _student_meta(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    student = raw.get("student") if isinstance(raw.get("student"), dict) else {}
    config = raw.get("config") if isinstance(raw.get("config"), dict) else {}
    arch = student.get("name") or raw.get("arch") or (config.get("student") or {}).get("name")
    if not arch:
        raise ModelFileError(
            f"{path} does not say which architecture it holds: expected 'student': {{'name': ...}} "
            "(distill runs) or 'arch' (plain checkpoints, see quantize.student.save_student)")
    size = student.get("embedding_size") or raw.get("embedding_size") or _embedding_size(raw["model"])
    name = config.get("name") or (path.parent.name if path.stem in ("last", "best") else path.stem)
    return {"arch": arch, "embedding_size": int(size), "name": name,
            "input": _input_spec(student.get("input") or raw.get("input"), path),
            "licence": str(raw.get("licence", "unknown"))}


def _embedding_size(state: dict[str, torch.Tensor]) -> int:
    # The last weight of a MobileFaceNet is the embedding conv (out_channels = D).
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]
    if not weights:
        raise ModelFileError("cannot infer the embedding size from the checkpoint: record "
                             "'embedding_size' in it")
    return int(weights[-1].shape[0])


def _input_spec(raw: dict[str, Any] | None, path: Path) -> InputSpec:
    if not raw:
        log.info("%s records no input convention: assuming the kit's (rgb, mean 127.5, std 127.5)", path)
        return TRAINING_INPUT

    def triple(value: Any) -> tuple[float, float, float]:
        return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3

    values = {"color": raw.get("color", TRAINING_INPUT.color),
              "mean": triple(raw.get("mean", TRAINING_INPUT.mean)),
              "std": triple(raw.get("std", TRAINING_INPUT.std)),
              "size": tuple(raw.get("size", TRAINING_INPUT.size))}
    return dataclasses.replace(TRAINING_INPUT, **values)


def save_student(model: nn.Module, arch: str, path: str | Path, input: InputSpec = TRAINING_INPUT,
                 licence: str = "unknown") -> Path:
    """Write ``model`` as a plain student checkpoint that ``load_student`` reads.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "arch": arch,
                "embedding_size": int(getattr(model, "embedding_size", _embedding_size(model.state_dict()))),
                "input": {"color": input.color, "mean": list(input.mean), "std": list(input.std),
                          "size": list(input.size)},
                "licence": licence}, path)
    return path


DEPTHWISE = "depthwise"  # --keep-float shorthand for every depthwise convolution


def expand_layer_names(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """``--keep-float`` names with ``depthwise`` replaced by every depthwise convolution of
    ``model`` (a conv with one group per input channel, the 7x7 GDC head included), in module
    order, without duplicates. Other names pass through; the exporters check them.

    The best onnxruntime INT8 of the real student keeps all 17 in float (plus ``conv_last.0``):
    ``--keep-float depthwise,conv_last.0`` instead of 18 names.
    """
    out = []
    for name in names:
        if name == DEPTHWISE:
            out += [n for n, m in model.named_modules()
                    if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
        else:
            out.append(name)
    return tuple(dict.fromkeys(out))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each Conv2d -> BatchNorm2d pair (in a Sequential) fused."""
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[first] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()
    return fused


@torch.no_grad()
def random_student(arch: str, faces: np.ndarray, name: str | None = None, seed: int = 0,
                   **kwargs: Any) -> Student:
    """A randomly initialised student whose BatchNorm statistics are measured on ``faces``.

    For latency studies and tests: the weights are random, but every BatchNorm holds the
    mean and variance its input really has on faces (a fresh model's 0 and 1 would let
    activations grow layer after layer), so INT8 ranges and cosines behave like a trained net's.
    """
    from distill.registry import create_model

    torch.manual_seed(seed)
    model = create_model(arch, **kwargs)
    momenta = {}
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            momenta[module] = module.momentum
            module.momentum = None  # cumulative average over all batches
    student = Student(model, arch, int(model.embedding_size), name=name or arch)
    model.train()
    for start in range(0, len(faces), 64):
        model(student.to_tensor(faces[start:start + 64]))
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.eval()
    return student
