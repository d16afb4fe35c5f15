"""Folding a QDQ graph's weight quantization into INT8 initializers (quantize.ort_qdq): the
same outputs, bit for bit, with no QuantizeLinear/Clip left on the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from quantize.ort_qdq import fold_weight_quantization


def _qdq_conv_graph() -> onnx.ModelProto:
    """PT2E's pattern: float weight -> QuantizeLinear (per channel) -> Clip(-63, 63) ->
    DequantizeLinear -> Conv, and an activation QuantizeLinear that must stay."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    weight[0, 0, 0, 0] = 0.5 * 0.02  # exactly half a step: rounds half to even
    inits = [numpy_helper.from_array(weight, "w"),
             numpy_helper.from_array(np.array([0.02, 0.01, 0.03, 0.015], np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(-63, np.int8), "lo"),
             numpy_helper.from_array(np.array(63, np.int8), "hi"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zero")]
    nodes = [helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["w_q"], axis=0, name="wq"),
             helper.make_node("Clip", ["w_q", "lo", "hi"], ["w_c"], name="clip"),
             helper.make_node("DequantizeLinear", ["w_c", "w_scale", "w_zero"], ["w_dq"], axis=0, name="wdq"),
             helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["x_q"], name="xq"),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="xdq"),
             helper.make_node("Conv", ["x_dq", "w_dq"], ["output"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_fold_keeps_the_function_and_stores_int8_weights():
    model = _qdq_conv_graph()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)
    assert fold_weight_quantization(model) == 1
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(_run(model, x), before)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops == {"QuantizeLinear": 1, "DequantizeLinear": 2, "Conv": 1}  # the activation's Q stays
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert "w" not in inits and inits["w_c"].dtype == np.int8  # the float weight is gone
    assert inits["w_c"].min() >= -63 and inits["w_c"].max() <= 63
    assert inits["w_c"][0, 0, 0, 0] == 0  # 0.5 rounds to even, as QuantizeLinear does


def test_nothing_to_fold_leaves_the_graph_alone():
    model = _qdq_conv_graph()
    assert fold_weight_quantization(model) == 1
    again = onnx.ModelProto()
    again.CopyFrom(model)
    assert fold_weight_quantization(again) == 0 and again == model


def test_activations_move_to_u8_with_the_same_values_and_weights_stay_s8():
    """input -> Q(s8) -> Clip(s8 bounds) -> DQ: the same dequantized values after the move."""
    from quantize.ort_qdq import activations_to_u8

    model = _qdq_conv_graph()
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array(-5, np.int8), "x_zero_neg"),
                              numpy_helper.from_array(np.array(-100, np.int8), "x_lo"),
                              numpy_helper.from_array(np.array(90, np.int8), "x_hi")])
    graph.node.extend([
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero_neg"], ["a_q"], name="aq"),
        helper.make_node("Clip", ["a_q", "x_lo", "x_hi"], ["a_c"], name="aclip"),
        helper.make_node("DequantizeLinear", ["a_c", "x_scale", "x_zero_neg"], ["clipped"], name="adq")])
    graph.output.append(helper.make_tensor_value_info("clipped", TensorProto.FLOAT, [1, 3, 8, 8]))
    x = 10 * np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)  # reaches the bounds
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    before = session.run(["clipped"], {"input": x})[0]
    assert activations_to_u8(model) == 4  # the two activation pairs; the weight's DQ is not one
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["clipped"], {"input": x})[0], before)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    assert inits[nodes["aq"].input[2]] == 123 and inits[nodes["aq"].input[2]].dtype == np.uint8
    assert [int(inits[nodes["aclip"].input[k]]) for k in (1, 2)] == [28, 218]
    assert inits[nodes["wdq"].input[2]].dtype == np.int8  # weights stay s8
