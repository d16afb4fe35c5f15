"""QDQ rewrites that let onnxruntime run a converted PT2E (QAT) graph as INT8 kernels.

The dynamo exporter writes a converted PT2E model (1) with float weights followed by
``QuantizeLinear -> Clip -> DequantizeLinear`` (the ``Clip`` holds PT2E's 7-bit range,
[-63, 63]): the graph quantizes every weight on every call, and the file (float weights) was
larger than the FP32 one, 5.7 MB against 5.3 on the real student; and (2) with INT8 (s8)
activations, for which onnxruntime's CPU provider fuses few convolutions into ``QLinearConv``
(19 of the student's 34 quantized ones; the others ran dequantize -> float Conv -> quantize).

``fold_weight_quantization`` computes the weight integers once, with the arithmetic
``QuantizeLinear`` and ``Clip`` perform (divide, round half to even, add the zero point,
saturate, clip): bit-identical outputs, 2.2 MB. ``activations_to_u8`` moves every activation
quantizer from s8 to u8 by adding 128 to its zero point (and to the bounds of a ``Clip``
after it): ``q_u8 = q_s8 + 128`` dequantizes to the same values, and onnxruntime then fuses
all 34 convolutions and the residual adds (u8s8, the PTQ route's choice,
``quantize.exporters.onnx``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ROUTE_NOTE = ("for onnxruntime (quantize.ort_qdq): weights stored as INT8, activations "
              "moved to u8 (zero points + 128)")


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


def activations_to_u8(model: onnx.ModelProto) -> int:
    """Move every s8 activation ``QuantizeLinear``/``DequantizeLinear`` to u8, in place (zero
    point + 128; a ``Clip`` on a quantized activation gets its bounds moved too); weights
    (constant inputs) stay s8. Returns how many quantize/dequantize nodes were moved."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    moved = 0
    for node in graph.node:
        if _is_s8_activation_qdq(node, inits) and not _from_constant(node.input[0], inits, producers):
            node.input[2] = _shifted(graph, inits, node.input[2])
            moved += 1
    for node in graph.node:  # Clips reading a (now u8) activation quantizer
        source = producers.get(node.input[0]) if node.op_type == "Clip" else None
        if source is not None and source.op_type == "QuantizeLinear" \
                and not _from_constant(source.input[0], inits, producers):
            for k in (1, 2):
                if len(node.input) > k and node.input[k] in inits \
                        and inits[node.input[k]].data_type == onnx.TensorProto.INT8:
                    node.input[k] = _shifted(graph, inits, node.input[k])
    _drop_int8_value_info(graph)
    _drop_unused(graph)
    return moved


def _is_s8_activation_qdq(node: onnx.NodeProto, inits: dict) -> bool:
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
        return False
    zero = inits.get(node.input[2])
    return zero is not None and zero.data_type == onnx.TensorProto.INT8


def _from_constant(name: str, inits: dict, producers: dict) -> bool:
    """Whether tensor ``name`` is a constant, or computed from one through quantize/clip nodes
    (an unfolded weight chain: its quantizers stay s8)."""
    while name not in inits:
        node = producers.get(name)
        if node is None or node.op_type not in ("QuantizeLinear", "Clip"):
            return False
        name = node.input[0]
    return True


def _shifted(graph: onnx.GraphProto, inits: dict, name: str) -> str:
    """The u8 twin (value + 128) of the s8 initializer ``name``, added once."""
    twin = f"{name}_u8"
    if twin not in inits:
        value = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
        inits[twin] = numpy_helper.from_array(value.astype(np.uint8), twin)
        graph.initializer.append(inits[twin])
    return twin


def _drop_int8_value_info(graph: onnx.GraphProto) -> None:
    """Shape/type hints still saying int8 for tensors that are now u8 (onnxruntime checks them;
    it infers the types again)."""
    keep = [v for v in graph.value_info if v.type.tensor_type.elem_type != onnx.TensorProto.INT8]
    del graph.value_info[:]
    graph.value_info.extend(keep)
