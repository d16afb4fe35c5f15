"""Branch-free PReLU for onnxruntime: ``PRelu(x, a)`` becomes ``x + (a - 1) * Min(x, 0)``.

onnxruntime's CPU ``PRelu`` kernel branches on the sign of every element. On real faces the
signs are unpredictable, and it took 7.7 of the student's 15.6 ms at one thread, more than
its 52 convolutions (6.4 ms). On a constant grey face it took 2.5 ms. The same function as
``Min``, ``Mul`` and ``Add``, which onnxruntime runs as vectorised element-wise kernels, brought
the FP32 student from 16.4 to 9.7 ms at 1 thread and from 10.4 to 6.7 ms at 2 (the kit's
interleaved loop, 2 cores; ``quantize/reports/maskinv_mobilefacenet_tflite``).

It computes the same function, up to the rounding of ``x + (a - 1) x`` against ``a x``: the
embedding moves by at most 2e-5. Only the onnxruntime file is rewritten. OpenVINO fuses
Convolution + PReLU itself and reads the plain graph, and the INT8 routes quantize the plain
graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROUTE_NOTE = ("PReLU written branch-free for onnxruntime (quantize.ort_prelu: x + (a - 1) * "
              "min(x, 0); its PRelu kernel branches per element)")


def branch_free_prelu(model: onnx.ModelProto) -> int:
    """Rewrite every ``PRelu`` whose slope is an initializer, in place; return how many.

    A ``PRelu`` whose slope is computed at run time is left alone (none in the kit's models).
    """
    inits = {t.name: t for t in model.graph.initializer}
    nodes, slopes, replaced = [], set(), 0
    for node in model.graph.node:
        if node.op_type != "PRelu" or node.input[1] not in inits:
            nodes.append(node)
            continue
        nodes += _rewrite(model.graph, node, numpy_helper.to_array(inits[node.input[1]]))
        slopes.add(node.input[1])
        replaced += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused(model.graph, slopes)
    return replaced


def _rewrite(graph: onnx.GraphProto, node: onnx.NodeProto, slope: np.ndarray) -> list[onnx.NodeProto]:
    x, y, name = node.input[0], node.output[0], node.name or node.output[0]
    zero, slope_minus_one = f"{name}/zero", f"{name}/slope_minus_one"
    graph.initializer.extend([numpy_helper.from_array(np.zeros((), slope.dtype), zero),
                              numpy_helper.from_array((slope - 1).astype(slope.dtype), slope_minus_one)])
    negative, scaled = f"{name}/negative", f"{name}/negative_scaled"
    return [helper.make_node("Min", [x, zero], [negative], name=f"{name}/min"),
            helper.make_node("Mul", [negative, slope_minus_one], [scaled], name=f"{name}/mul"),
            helper.make_node("Add", [x, scaled], [y], name=f"{name}/add")]


def _drop_unused(graph: onnx.GraphProto, names: set[str]) -> None:
    """The replaced slopes that nothing reads any more (onnxruntime warns about each at load)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
