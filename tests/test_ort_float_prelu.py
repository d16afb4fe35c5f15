"""quantize.ort_float_prelu: conv -> PReLU -> float depthwise chains without the quantizer
before the PReLU, on small QDQ graphs built here and run by onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantize.ort_float_prelu import float_prelu_inputs
from quantize.ort_prelu import branch_free_prelu

CHANNELS, SIZE = 6, 6


def _graph(kernel: int = 1, stride: int = 1, reader_group: int = CHANNELS,
           requantize: bool = True, int_bias: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ (u8) -> Conv (s8 per-channel weights, bias) -> [Q/DQ u8] -> PRelu -> 3x3
    float conv (depthwise when ``reader_group`` is the channel count) -> y; the same weights on
    every call. ``int_bias``: the bias as onnxruntime's quantizer writes it, int32 through a
    per-channel DequantizeLinear."""
    rng = np.random.default_rng(0)
    reader_in = CHANNELS // reader_group
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (np.array(0.05, np.float32), "x_scale"), (np.array(128, np.uint8), "x_zero"),
        (rng.integers(-63, 64, (CHANNELS, 4, kernel, kernel)).astype(np.int8), "w_int"),
        (rng.uniform(0.002, 0.01, CHANNELS).astype(np.float32), "w_scale"),
        (np.zeros(CHANNELS, np.int8), "w_zero"), (rng.normal(0, 0.5, CHANNELS).astype(np.float32), "b"),
        (np.array(0.08, np.float32), "y_scale"), (np.array(100, np.uint8), "y_zero"),
        (rng.uniform(-6, 6, (CHANNELS, 1, 1)).astype(np.float32), "slope"),
        (rng.normal(0, 0.3, (CHANNELS, reader_in, 3, 3)).astype(np.float32), "dw"))]
    pad = kernel // 2
    nodes = []
    if int_bias:
        bias_scale = 0.05 * numpy_helper.to_array(inits[3])
        bias = np.round(numpy_helper.to_array(inits[5]) / bias_scale).astype(np.int32)
        inits[5] = numpy_helper.from_array(bias, "b_int")
        inits += [numpy_helper.from_array(bias_scale.astype(np.float32), "b_scale"),
                  numpy_helper.from_array(np.zeros(CHANNELS, np.int32), "b_zero")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_int", "b_scale", "b_zero"], ["b"], axis=0))
    nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_int", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["xd", "w", "b"], ["z"], name="expand", strides=[stride] * 2,
                              pads=[pad] * 4)]
    if requantize:
        nodes += [helper.make_node("QuantizeLinear", ["z", "y_scale", "y_zero"], ["zq"]),
                  helper.make_node("DequantizeLinear", ["zq", "y_scale", "y_zero"], ["zd"])]
    nodes += [helper.make_node("PRelu", ["zd" if requantize else "z", "slope"], ["p"]),
              helper.make_node("Conv", ["p", "dw"], ["y"], group=reader_group, pads=[1, 1, 1, 1])]
    out = SIZE // stride
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, CHANNELS, out, out])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def _run(model: onnx.ModelProto, x: np.ndarray, optimise: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("kernel, stride, branch_free, kernel_op, int_bias", [
    (1, 1, False, "MatMulIntegerToFloat", False),  # an expansion conv, the PReLU node as exported
    (1, 1, True, "MatMulIntegerToFloat", False),   # the same after quantize.ort_prelu
    (1, 1, True, "MatMulIntegerToFloat", True),    # onnxruntime PTQ's int32 bias
    (3, 2, True, "Conv", False),                   # the stem: float conv of dequantized values
])
def test_rewrite_computes_the_graph_without_the_quantizer_before_the_prelu(kernel, stride, branch_free,
                                                                          kernel_op, int_bias):
    """The rewritten file equals the QDQ graph with its conv-output Q/DQ taken out (the
    accumulator is exact), not the QDQ graph itself: that rounding, which the slopes amplify,
    is gone."""
    x = np.random.default_rng(1).normal(0, 2, (2, 4, SIZE, SIZE)).astype(np.float32)
    model = _graph(kernel, stride, int_bias=int_bias)
    without_rounding = _graph(kernel, stride, requantize=False, int_bias=int_bias)
    if branch_free:
        branch_free_prelu(model)
    with_rounding = _run(model, x, optimise=False)
    assert float_prelu_inputs(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert kernel_op in ops and ops.count("QuantizeLinear") == 1  # the input's only
    rewritten = _run(model, x)
    np.testing.assert_allclose(rewritten, _run(without_rounding, x, optimise=False), rtol=1e-4, atol=1e-4)
    assert np.abs(rewritten - with_rounding).max() > 1e-3


def test_a_prelu_feeding_a_full_convolution_keeps_its_quantizer():
    """A 3x3 conv over all channels reads INT8 as QLinearConv: the chain is left alone."""
    model = _graph(reader_group=1)
    before = model.SerializeToString()
    assert float_prelu_inputs(model) == 0
    assert model.SerializeToString() == before


@pytest.mark.parametrize("kernel, stride, kernel_op", [(1, 1, "MatMulIntegerToFloat"), (3, 2, "Conv")])
def test_a_prelu_reading_the_conv_directly_is_rewritten_to_the_same_function(kernel, stride, kernel_op):
    """A QAT graph trained without that quantizer (quantize.pt2e float_prelu_inputs) has the
    PReLU on the conv's float output already: the 1x1 conv still becomes the integer kernel,
    the stem stays, and the function is unchanged."""
    x = np.random.default_rng(2).normal(0, 2, (2, 4, SIZE, SIZE)).astype(np.float32)
    model = _graph(kernel, stride, requantize=False)
    branch_free_prelu(model)
    reference = _run(model, x, optimise=False)
    assert float_prelu_inputs(model) == 1
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert kernel_op in ops and ops.count("QuantizeLinear") == 1
    np.testing.assert_allclose(_run(model, x), reference, rtol=1e-4, atol=1e-4)
