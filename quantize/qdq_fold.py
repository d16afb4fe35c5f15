"""Fold the weight quantization of a QDQ ONNX graph into INT8 initializers, for onnxruntime.

The dynamo exporter writes a converted PT2E model's weights as float initializers followed by
``QuantizeLinear -> Clip -> DequantizeLinear`` (the ``Clip`` holds PT2E's 7-bit range,
[-63, 63]): the graph quantizes every weight on every call. onnxruntime fuses a convolution
into ``QLinearConv`` only when its weight ``DequantizeLinear`` reads a constant, so on the
real student 33 of 52 convolutions ran in float with quantize/dequantize around them, and the
file (float weights) was larger than the FP32 one: 5.7 MB against 5.3.

``fold_weight_quantization`` computes those integers once, with the arithmetic
``QuantizeLinear`` and ``Clip`` perform (divide, round half to even, add the zero point,
saturate, clip), and feeds them to the ``DequantizeLinear`` as an INT8 initializer. The
function the graph computes is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ROUTE_NOTE = ("weights stored as INT8 (quantize.qdq_fold: the QAT graph's weight "
              "QuantizeLinear/Clip computed once)")


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace each ``initializer -> QuantizeLinear [-> Clip] -> DequantizeLinear`` chain's
    quantizing part by its integer result, in place; return how many chains were folded."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded, dropped = 0, set()
    for node in graph.node:
        chain = _weight_chain(node, inits, consumers)
        if chain is None:
            continue
        q_node, clip = chain
        last = clip or q_node
        graph.initializer.append(numpy_helper.from_array(_quantize(q_node, clip, inits), last.output[0]))
        dropped.update(n.output[0] for n in (q_node, clip) if n is not None)
        folded += 1
    kept = [n for n in graph.node if n.output[0] not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused(graph)
    return folded


def _weight_chain(node, inits, consumers):
    """(QuantizeLinear, Clip or None) when ``node`` quantizes a constant whose result only
    feeds ``DequantizeLinear`` nodes (directly or through one constant ``Clip``); else None."""
    if node.op_type != "QuantizeLinear" or len(node.input) < 3 \
            or not all(name in inits for name in node.input):
        return None  # a zero point left out (uint8 by default) does not occur in PT2E exports
    after = consumers.get(node.output[0], [])
    clip = after[0] if len(after) == 1 and after[0].op_type == "Clip" else None
    if clip is not None:
        if len(clip.input) < 3 or not all(name in inits for name in clip.input[1:]):
            return None
        after = consumers.get(clip.output[0], [])
    if not after or any(n.op_type != "DequantizeLinear" for n in after):
        return None
    return node, clip


def _quantize(q_node, clip, inits) -> np.ndarray:
    """What ``QuantizeLinear`` (and the ``Clip``) output for the constant input."""
    x, scale, zero = (numpy_helper.to_array(inits[name]) for name in q_node.input[:3])
    axis = next((a.i for a in q_node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and x.ndim > 1:  # per channel along ``axis``
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    info = np.iinfo(zero.dtype)
    q = np.rint(x.astype(np.float32) / scale.astype(np.float32)) + zero.astype(np.float32)
    q = np.clip(q, info.min, info.max)
    if clip is not None:
        low, high = (numpy_helper.to_array(inits[name]) for name in clip.input[1:3])
        q = np.clip(q, low, high)
    return q.astype(zero.dtype)


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Initializers nothing reads any more (the float weights)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
