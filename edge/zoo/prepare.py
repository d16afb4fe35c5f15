"""Turn a third-party model file into a file the kit's runtimes load.

Each preparer reads ``src`` and writes ``dst``; none needs torch. The ONNX and OpenVINO
ones import their packages lazily: a device that only runs prepared models needs neither.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from edge.errors import ModelFileError, RuntimeUnavailableError
from edge.telemetry import import_openvino

log = logging.getLogger(__name__)


def copy(src: Path, dst: Path) -> None:
    """The file is usable as it is."""
    shutil.copyfile(src, dst)


def clean_onnx(src: Path, dst: Path) -> None:
    """Drop graph inputs that onnxruntime refuses and make the batch dimension dynamic.

    SFace int8bq declares its weights both as initializers and as graph inputs, some of
    them unused after block quantization; onnxruntime rejects unused inputs. Initializers
    stay; only the image input remains a graph input.
    """
    onnx = _import("onnx", "pip install onnx")
    try:
        model = onnx.load(str(src))
    except Exception as err:  # protobuf DecodeError and friends
        raise ModelFileError(f"{src} is not a readable ONNX file ({err}); re-download it") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.input if i.name not in initializers and i.name in used]
    dropped = len(graph.input) - len(keep)
    del graph.input[:]
    graph.input.extend(keep)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    log.info("cleaned %s: dropped %d graph inputs, dynamic batch", src.name, dropped)


def dequantize_onnx(src: Path, dst: Path) -> None:
    """Clean the graph like ``clean_onnx`` and fold weight-only (block) dequantization to FP32.

    OpenVINO's ONNX reader rejects ``DequantizeLinear`` with ``block_size`` (opset 21), and
    TFLite converters do too. Weight-only quantized constants are expanded with numpy; the
    arithmetic is the one onnxruntime performs, so the FP32 graph computes the same function.
    """
    onnx = _import("onnx", "pip install onnx")
    from onnx import numpy_helper

    clean_onnx(src, dst)
    model = onnx.load(str(dst))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(name in inits for name in node.input):
            q, scale, zero = (numpy_helper.to_array(inits[name]) for name in node.input)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            weight = _dequantize(q, scale, zero, attrs.get("axis", 1), attrs.get("block_size", 0))
            graph.initializer.append(numpy_helper.from_array(weight, node.output[0]))
            folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    log.info("folded %d DequantizeLinear nodes of %s to FP32", len(folded), src.name)


def _dequantize(q, scale, zero, axis: int, block: int):
    import numpy as np

    if block:  # blocked: every `block` elements along `axis` share one scale
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    elif scale.ndim == 1 and q.ndim > 1:  # per-channel along `axis`
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)


def to_openvino(src: Path, dst: Path) -> None:
    """Convert an ONNX or TFLite file to OpenVINO IR (``dst`` is the .xml; .bin beside it)."""
    ov = import_openvino("converting to OpenVINO IR")
    model = ov.convert_model(str(src))
    ov.save_model(model, str(dst), compress_to_fp16=False)


PREPARERS = {
    "copy": copy,
    "clean_onnx": clean_onnx,
    "dequantize_onnx": dequantize_onnx,
    "to_openvino": to_openvino,
}


def _import(name: str, fix: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise RuntimeUnavailableError(f"preparing this model needs {name}: {fix}") from None
