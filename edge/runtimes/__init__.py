"""Runtime backends, picked by name or by model-file suffix, imported lazily.

Only the runtime a model needs is imported, so a device with just onnxruntime (or just
tflite_runtime) can use the kit.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge.card import ModelCard, card_path, verify_checksum
from edge.errors import ConfigError, ModelFileError
from edge.runtimes.base import Runtime, l2_normalize

# runtime name -> "module:Class"
BACKENDS: dict[str, str] = {
    "onnxruntime": "edge.runtimes.onnx:OnnxRuntime",
    "openvino": "edge.runtimes.openvino:OpenVinoRuntime",
    "tflite": "edge.runtimes.tflite:TfliteRuntime",
    # NVIDIA GPU / Jetson: an engine built from the ONNX (never a file suffix's default).
    "tensorrt": "edge.runtimes.tensorrt:TensorRTRuntime",
}
# file suffix -> default runtime
SUFFIXES: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".xml": "openvino",
    ".tflite": "tflite",
}

__all__ = ["BACKENDS", "SUFFIXES", "Runtime", "backend_class", "l2_normalize", "load_model"]


def backend_class(name: str) -> type[Runtime]:
    """Return the runtime class registered as ``name``.

    Raises:
        ConfigError: ``name`` is not a known runtime.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown runtime {name!r}; valid runtimes: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def runtime_for_suffix(path: Path) -> str:
    """Default runtime name for a model file, from its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelFileError(
            f"{path}: unknown model suffix {suffix!r}; supported: {', '.join(SUFFIXES)}"
        )
    return SUFFIXES[suffix]


def load_model(
    path: Path,
    runtime: str | None = None,
    threads: int | None = None,
    card: ModelCard | None = None,
    verify: bool = True,
) -> Runtime:
    """Open a carded model file.

    Args:
        path: the model file (.onnx, .xml, .tflite); its card lies beside it.
        runtime: a name from ``BACKENDS``; default from the suffix.
        threads: intra-op threads (None: the runtime's default).
        card: use this card instead of reading ``card_path(path)``.
        verify: check the file's sha256 against the card.

    Raises:
        ModelFileError, ModelCardError, ConfigError, RuntimeUnavailableError.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    name = runtime or runtime_for_suffix(path)
    cls = backend_class(name)
    card = card or ModelCard.load(card_path(path))
    if verify:
        verify_checksum(path, card)
    return cls.from_path(path, card, threads)
