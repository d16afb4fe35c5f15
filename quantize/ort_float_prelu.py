"""onnxruntime INT8 without a quantizer between a convolution and its PReLU, where float
depthwise convolutions read the PReLU.

A QDQ graph quantizes each convolution's output *before* its PReLU (what ``QLinearConv``
needs, and the PT2E quantizer's pattern). The PReLU's slopes (up to 9.4 in the kit's student)
multiply that rounding, and the layers after it pass the extra noise on, amplified: the same
INT8 file run fused and unfused gives embeddings only 0.997 apart
(``quantize/reports/maskinv_mobilefacenet_tflite``). OpenVINO quantizes after the PReLU. For
onnxruntime that is possible wherever the PReLU feeds depthwise convolutions left in float
(``--keep-float depthwise``: in MobileFaceNet the stem and every expansion convolution), since
no INT8 tensor is needed there at all. The convolution keeps its integer inputs and returns
its exact accumulator, scaled to float:

- a 1x1 convolution (the expansions) becomes ``MatMulIntegerToFloat`` (onnxruntime's
  ``com.microsoft`` kernel: u8 x s8 GEMM, per-channel scale and bias applied in its epilogue)
  on the channels-last activation; its PReLU runs channels-last too, and one ``Transpose``
  hands the result to the depthwise conv, which onnxruntime folds into its channels-last
  reorder. ``ConvInteger`` does the same maths but slowly: the student at twice FP32's time;
- any other convolution (the 3x3 stem, 3 input channels) stays a float ``Conv`` of its
  dequantized input and weights, the same values: 0.18 ms, against 1.07 as ``ConvInteger``
  (onnxruntime profile, 2 threads).

The result computes the QDQ graph's function without that one rounding: on the real student's
QAT file, parity to FP32 0.99620 -> 0.99760, and faster than FP32 (report README).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROUTE_NOTE = ("no quantizer before a PReLU that feeds a float depthwise conv: 1x1 convs run as "
              "MatMulIntegerToFloat with the PReLU channels-last, others as float Conv "
              "(quantize.ort_float_prelu)")
MS_DOMAIN = "com.microsoft"
NCHW_TO_NHWC, NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def float_prelu_inputs(model: onnx.ModelProto) -> int:
    """Rewrite every such chain (module doc) in place; return how many."""
    graph = model.graph
    index = _Index(graph)
    # New nodes go in place of the convolution (``instead``) and after the PReLU (``after``).
    instead: dict[str, list[onnx.NodeProto]] = {}
    after: dict[str, list[onnx.NodeProto]] = {}
    dropped: set[str] = set()
    for conv in graph.node:
        chain = _chain(conv, index)
        if chain is None:
            continue
        q_node, dq_node, prelu, readers = chain
        rewrite = _pointwise if _is_pointwise(conv, index) else _float_conv
        instead[conv.output[0]], after[prelu[-1].output[0]] = rewrite(
            graph, index, conv, dq_node or conv, prelu, readers)
        dropped.update(n.output[0] for n in (q_node, dq_node) if n is not None)
    if not instead:
        return 0
    nodes = []
    for node in graph.node:
        if node.output[0] not in dropped:
            nodes += instead.get(node.output[0], [node]) + after.get(node.output[0], [])
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shapes of the rewritten PReLUs changed; onnxruntime infers them
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _drop_dead(graph)
    return len(instead)


def prelu_inputs_stay_float(model: onnx.ModelProto, float_convs: set[str]) -> bool:
    """Whether, in the FP32 graph ``model`` quantized with the Conv nodes ``float_convs`` left
    float, ``float_prelu_inputs`` leaves no quantizer before any PReLU: each PReLU reads a float
    conv, or a conv whose PReLU feeds only float depthwise convs. Then onnxruntime PTQ needs no
    PReLU split (``quantize.exporters.onnx``)."""
    index = _Index(model.graph)
    for prelu in (n for n in model.graph.node if n.op_type == "PRelu"):
        source = index.producer.get(prelu.input[0])
        if source is None or source.op_type != "Conv" or source.input[1] not in index.inits:
            return False
        if source.name in float_convs:
            continue
        channels = index.array(source.input[1]).shape[0]
        readers = index.consumers.get(prelu.output[0], [])
        if not readers or not all(r.name in float_convs and _float_depthwise(r, channels, index)
                                  for r in readers):
            return False
    return True


class _Index:
    """Initializers, producers and consumers of a graph's tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.inits[name])

    def constant(self, name: str) -> np.ndarray | None:
        """An initializer's value, or a ``DequantizeLinear`` of initializers computed (the
        per-axis form onnxruntime writes for int32 biases); None for anything else."""
        if name in self.inits:
            return self.array(name)
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or not all(n in self.inits for n in node.input):
            return None
        value, scale, *zero = (self.array(n).astype(np.float64) for n in node.input)
        if scale.size > 1 and value.ndim != 1:
            return None  # per-axis over a tensor: not a bias
        return ((value - (zero[0] if zero else 0.0)) * scale).astype(np.float32)

    def only(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single consumer of ``name`` if it is an ``op_type`` node."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _chain(conv: onnx.NodeProto, index: _Index):
    """(Q, DQ, PReLU nodes, depthwise readers) when ``conv`` heads a chain the rewrite handles;
    Q and DQ are None where the PReLU reads the convolution directly (a QAT graph trained
    without that quantizer, ``quantize.pt2e._FloatPreluInputs``)."""
    if conv.op_type != "Conv" or not _integer_inputs(conv, index):
        return None
    q_node = index.only(conv.output[0], "QuantizeLinear")
    dq_node = index.only(q_node.output[0], "DequantizeLinear") if q_node else None
    prelu = _prelu_nodes((dq_node or conv).output[0], index) if dq_node or not q_node else None
    if prelu is None:
        return None
    channels = index.array(index.producer[conv.input[1]].input[0]).shape[0]
    readers = index.consumers.get(prelu[-1].output[0], [])
    if not readers or not all(_float_depthwise(n, channels, index) for n in readers):
        return None
    return q_node, dq_node, prelu, readers


def _integer_inputs(conv: onnx.NodeProto, index: _Index) -> bool:
    """u8 activation with a constant scalar scale and zero point; s8 constant weights with a
    zero point of 0; a constant bias (float, or int32 dequantized as onnxruntime's quantizer
    writes it) or none."""
    x_dq, w_dq = (index.producer.get(name) for name in conv.input[:2])
    if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
        return False
    if len(x_dq.input) < 3 or not all(n in index.inits for n in x_dq.input[1:3]):
        return False
    if len(w_dq.input) < 3 or not all(n in index.inits for n in w_dq.input):
        return False
    x_zero, w_int, w_zero = (index.array(n) for n in (x_dq.input[2], w_dq.input[0], w_dq.input[2]))
    bias_ok = len(conv.input) < 3 or index.constant(conv.input[2]) is not None
    return (x_zero.dtype == np.uint8 and x_zero.size == 1 and index.array(x_dq.input[1]).size == 1
            and w_int.dtype == np.int8 and w_int.ndim == 4 and not w_zero.any() and bias_ok)


def _prelu_nodes(x: str, index: _Index) -> list[onnx.NodeProto] | None:
    """The nodes of the PReLU reading ``x`` and nothing else, its output last: a ``PRelu`` or
    the branch-free ``x + (a - 1) * Min(x, 0)`` of ``quantize.ort_prelu``."""
    users = index.consumers.get(x, [])
    if len(users) == 1 and users[0].op_type == "PRelu":
        return users
    if sorted(n.op_type for n in users) != ["Add", "Min"]:
        return None
    add, low = sorted(users, key=lambda n: n.op_type)
    mul = index.only(low.output[0], "Mul")
    if mul is None or index.only(mul.output[0], "Add") is not add:
        return None
    return [low, mul, add]


def _float_depthwise(node: onnx.NodeProto, channels: int, index: _Index) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return (node.op_type == "Conv" and node.input[1] in index.inits and group == channels
            and index.array(node.input[1]).shape[0] == channels)


def _is_pointwise(conv: onnx.NodeProto, index: _Index) -> bool:
    attrs = {a.name: list(a.ints) if a.ints else a.i for a in conv.attribute}
    kernel = index.array(index.producer[conv.input[1]].input[0]).shape[2:]
    return (kernel == (1, 1) and set(attrs.get("strides", [1])) == {1} and not any(attrs.get("pads", []))
            and attrs.get("group", 1) == 1)


def _pointwise(graph, index: _Index, conv, prelu_input, prelu, readers):
    """Transpose -> MatMulIntegerToFloat in place of ``conv``, the PReLU made channels-last,
    and a Transpose after it, back for the ``readers``: (nodes instead, nodes after)."""
    x_dq, w_dq = (index.producer[name] for name in conv.input[:2])
    w_int = index.array(w_dq.input[0])
    channels = w_int.shape[0]
    name = conv.name or conv.output[0]
    weight, scale, bias = (f"{name}/{part}" for part in ("weight_kxm", "weight_scale", "bias"))
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(w_int.reshape(channels, -1).T), weight),
        numpy_helper.from_array(_per_channel(index.array(w_dq.input[1]), channels), scale),
        numpy_helper.from_array(_bias(conv, index, channels), bias)])
    x_last, y_last, y_first = f"{name}/x_nhwc", f"{name}/y_nhwc", f"{name}/prelu_nchw"
    _rewire(index.consumers[prelu_input.output[0]], prelu_input.output[0], y_last)
    for node in prelu:  # per-channel constants [1, C, 1, 1] or [C, 1, 1] -> [C]
        node.input[:] = [_channels_last(graph, index, n, channels) for n in node.input]
    _rewire(readers, prelu[-1].output[0], y_first)
    return ([helper.make_node("Transpose", [x_dq.input[0]], [x_last], perm=NCHW_TO_NHWC, name=f"{name}/to_nhwc"),
             helper.make_node("MatMulIntegerToFloat", [x_last, weight, x_dq.input[1], scale, x_dq.input[2], "",
                                                       bias], [y_last], name=f"{name}/integer", domain=MS_DOMAIN)],
            [helper.make_node("Transpose", [prelu[-1].output[0]], [y_first], perm=NHWC_TO_NCHW,
                              name=f"{name}/to_nchw")])


def _float_conv(graph, index: _Index, conv, prelu_input, prelu, readers):
    """``conv`` as it is (dequantized input and weights, float arithmetic), its output read by
    the PReLU directly: (nodes instead, no nodes after)."""
    _rewire(index.consumers[prelu_input.output[0]], prelu_input.output[0], conv.output[0])
    return [conv], []


def _per_channel(scale: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(scale.astype(np.float32).reshape(-1), (channels,)).copy()


def _bias(conv: onnx.NodeProto, index: _Index, channels: int) -> np.ndarray:
    if len(conv.input) > 2 and conv.input[2]:
        return index.constant(conv.input[2]).astype(np.float32).reshape(channels)
    return np.zeros(channels, np.float32)


def _rewire(nodes, old: str, new: str) -> None:
    for node in nodes:
        node.input[:] = [new if name == old else name for name in node.input]


def _channels_last(graph, index: _Index, name: str, channels: int) -> str:
    """``name`` itself, or for a per-channel constant shaped for NCHW its [C] twin."""
    if name not in index.inits:
        return name
    value = index.array(name)
    if value.size != channels or value.ndim < 2:
        return name
    twin = f"{name}/nhwc"
    if twin not in index.inits:
        index.inits[twin] = numpy_helper.from_array(value.reshape(channels), twin)
        graph.initializer.append(index.inits[twin])
    return twin


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Nodes whose outputs nothing reads (the weight dequantizers the rewrite bypassed), then
    the initializers nothing reads."""
    while True:
        used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
        live = [node for node in graph.node if any(out in used for out in node.output)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
