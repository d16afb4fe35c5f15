"""Load released teacher checkpoints (and our own) whatever their wrapping, or say why not.

A *layout* names one family of files: which wrapper key holds the weights, which prefixes to
strip, which training-only keys to drop and which submodule receives them. The keys are then
compared with the model before ``load_state_dict(strict=True)``, so a mismatch is reported as
"this file is not that layout" with the offending keys, not as a bare RuntimeError.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from distill.registry import Registry
from edge.errors import ModelFileError

GZIP_MAGIC = b"\x1f\x8b"
# Wrappers seen around state_dicts: our trainer, Lightning/timm ({'state_dict'}), ({'model'}).
COMMON_WRAPPERS = ("state_dict", "model", "model_state_dict")
# DataParallel/DDP ('module.') and torch.compile ('_orig_mod.') prefix every key.
COMMON_PREFIXES = ("module.", "_orig_mod.")
SHOW = 8  # keys listed per category in an error message


class CheckpointLayoutError(ModelFileError):
    """A checkpoint's keys or shapes do not match the model for the requested layout."""


@dataclass(frozen=True)
class CheckpointLayout:
    """How one family of released files stores its weights.

    Attributes:
        name: registry name.
        description: what file this is, for error messages.
        source: the public code that defines the key names.
        wrappers: dict keys, tried in order, whose value is the state_dict.
        drop_prefixes: keys of training-only parts to ignore (e.g. a classification head).
        submodule: child of the model that receives the weights, when the model has it.
    """

    name: str
    description: str
    source: str
    wrappers: tuple[str, ...] = ()
    drop_prefixes: tuple[str, ...] = ()
    submodule: str | None = None


LAYOUTS: Registry[CheckpointLayout] = Registry("checkpoint layout")


def _add(layout: CheckpointLayout) -> None:
    LAYOUTS.register(layout.name)(layout)


_add(CheckpointLayout(
    "insightface_iresnet",
    "an insightface/ElasticFace iResNet backbone, e.g. ElasticFace 295672backbone.pth",
    "github.com/deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py; "
    "github.com/fdbtrs/ElasticFace backbones/iresnet.py",
))
_add(CheckpointLayout(
    "ffr_se50",
    "FFR-Net's SENet50 (IR-SE-50) backbone se50.pth",
    "github.com/haoosz/FFR-Net pretrain/model_ir_se50.py (Backbone(50, mode='ir_se'))",
    submodule="backbone",
))
_add(CheckpointLayout(
    "ffr_recnet",
    "FFR-Net's rectification network FFRNet.pth ({'RecNet': state_dict, ...}, maybe gzip)",
    "github.com/haoosz/FFR-Net models/recnet.py (RecNet), models/trainer.py (save_model)",
    wrappers=("RecNet",),
    drop_prefixes=("classifier.",),  # CosFace head over 10575 CASIA-WebFace identities
    submodule="rectifier",
))
_add(CheckpointLayout(
    "maskedge",
    "a MaskEdge model state_dict (bare or under 'model')",
    "distill/models",
))


def load_official_checkpoint(model: nn.Module, path: str | os.PathLike, layout: str) -> nn.Module:
    """Load the checkpoint at ``path``, stored in ``layout``, into ``model`` (strictly).

    Args:
        model: the model (or, for layouts with a ``submodule``, the model holding it).
        path: the ``.pth`` file, plain or gzip-compressed.
        layout: a name from ``LAYOUTS.names()``.

    Returns:
        The module that received the weights (``model`` or its ``layout.submodule``).

    Raises:
        UnknownNameError: unknown ``layout``.
        ModelFileError: the file is missing, empty, truncated or not a checkpoint.
        CheckpointLayoutError: missing, unexpected or mis-shaped keys.
    """
    spec = LAYOUTS.get(layout)
    target = _target(model, spec)
    state = _extract_state_dict(read_checkpoint(path), spec, path)
    _fill_batch_counters(state, target)
    _check_keys(state, target.state_dict(), spec, path)
    target.load_state_dict(state, strict=True)
    return target


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Read a torch checkpoint (plain or gzip) on CPU without running pickled code.

    Raises:
        ModelFileError: missing, empty, truncated or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} not found: check the path or download it again")
    if path.stat().st_size == 0:
        raise ModelFileError(f"checkpoint {path} is empty (0 bytes): download it again")
    with path.open("rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    try:
        if gzipped:  # FFR-Net's trainer writes torch.save into a GzipFile
            with gzip.open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as err:
        raise ModelFileError(
            f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}): download it again and "
            "compare its size and checksum with the release"
        ) from err


def _target(model: nn.Module, spec: CheckpointLayout) -> nn.Module:
    # The same layout loads into the full teacher (which has the submodule) or a bare backbone.
    if spec.submodule and spec.submodule in dict(model.named_children()):
        return model.get_submodule(spec.submodule)
    return model


def _extract_state_dict(obj: Any, spec: CheckpointLayout, path: Any) -> dict[str, torch.Tensor]:
    for key in spec.wrappers + COMMON_WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        found = sorted(obj)[:SHOW] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointLayoutError(
            f"{path} holds no state_dict where the '{spec.name}' layout expects one "
            f"({spec.description}; wrapper keys tried: "
            f"{', '.join(spec.wrappers + COMMON_WRAPPERS)}); found: {found}"
        )
    state = {}
    for key, value in obj.items():
        for prefix in COMMON_PREFIXES:
            key = key.removeprefix(prefix)
        if spec.drop_prefixes and key.startswith(spec.drop_prefixes):
            continue
        state[key] = value
    return state


def _fill_batch_counters(state: dict[str, torch.Tensor], target: nn.Module) -> None:
    # Files saved before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked; it only matters
    # for momentum=None, so take the model's own counter instead of refusing the file.
    for key, value in target.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value


def _check_keys(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    spec: CheckpointLayout,
    path: Any,
) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{label} ({len(keys)}): {', '.join(keys[:SHOW])}{' ...' if len(keys) > SHOW else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if keys
    ]
    raise CheckpointLayoutError(
        f"{path} does not match the '{spec.name}' layout for this model: expected "
        f"{spec.description} (key names from {spec.source}). " + "; ".join(parts)
        + ". Check the file, the layout and the model variant (depth, embedding size); "
        f"known layouts: {', '.join(LAYOUTS.names())}"
    )
