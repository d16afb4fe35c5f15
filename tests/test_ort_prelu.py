"""The onnxruntime PReLU rewrite (quantize.ort_prelu): the same function without PRelu nodes,
for slopes inside and outside [0, 1], and what the ONNX exporter ships with it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from quantize.ort_prelu import branch_free_prelu


def _conv_prelu_graph(slope: np.ndarray) -> onnx.ModelProto:
    """input -> Conv -> PRelu(slope) -> PRelu(slope) -> output (two rewrites, one shared slope)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    slope_init = numpy_helper.from_array(slope.reshape(4, 1, 1).astype(np.float32), "slope")
    nodes = [helper.make_node("Conv", ["input", "w"], ["z"], name="conv"),
             helper.make_node("PRelu", ["z", "slope"], ["p"], name="prelu_0"),
             helper.make_node("PRelu", ["p", "slope"], ["output"], name="prelu_1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [weight, slope_init])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


@pytest.mark.parametrize("slope", [np.array([0.25, 0.0, 1.0, 0.5]),
                                   np.array([-9.4, 8.9, -1.0, 3.0])])  # the real student's range
def test_rewrite_is_the_same_function_without_prelu(slope):
    model = _conv_prelu_graph(slope)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)
    assert branch_free_prelu(model) == 2
    onnx.checker.check_model(model)
    assert not any(n.op_type == "PRelu" for n in model.graph.node)
    assert "slope" not in {t.name for t in model.graph.initializer}  # no unused-initializer warning
    after = _run(model, x)
    assert (before < 0).any() and (before > 0).any()
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_graph_without_prelu_is_left_alone():
    model = _conv_prelu_graph(np.ones(4))
    model.graph.node[1].op_type = model.graph.node[2].op_type = "Relu"
    for node in model.graph.node[1:]:
        del node.input[1:]
    before = model.SerializeToString()
    assert branch_free_prelu(model) == 0
    assert model.graph.node[0].name == "conv" and len(model.graph.node) == 3
    assert model.SerializeToString() == before


@pytest.mark.realdata
def test_the_onnx_export_ships_the_rewrite_and_passes_parity(calibration, tmp_path):
    """A PReLU student's FP32 .onnx has no PRelu, passes the FP32 gate (cosine >= 0.9999 to
    PyTorch), says so in its card; the plain graph stays the intermediate the others read."""
    from quantize.context import ExportContext
    from quantize.exporter import run_export
    from quantize.formats import FORMATS
    from quantize.student import random_student

    student = random_student("mobilefacenet_tiny", calibration.calibration_faces(), name="tiny")
    ctx = ExportContext(student, calibration, tmp_path)
    result = run_export(ctx, FORMATS["onnx"], "fp32", thresholds=False)
    shipped = onnx.load(str(result.path))
    assert not any(n.op_type == "PRelu" for n in shipped.graph.node)
    assert result.parity.passed and result.parity.min >= 0.9999
    assert "quantize.ort_prelu" in result.card.provenance["export"]
    assert any(n.op_type == "PRelu" for n in onnx.load(str(ctx.fp32_onnx())).graph.node)


def test_repeated_exports_name_the_rewrite_once(tmp_path):
    """An --auto-float ladder exports the same format again in one context."""
    from types import SimpleNamespace

    from quantize.exporters.onnx import write_for_onnxruntime

    src = tmp_path / "m.onnx"
    onnx.save(_conv_prelu_graph(np.array([0.25, -2.0, 1.0, 3.0])), str(src))
    ctx = SimpleNamespace(route_notes={("onnx", "int8-ptq"): "PReLU split"})
    for _ in range(2):
        write_for_onnxruntime(ctx, src, tmp_path / "out.onnx", "int8-ptq")
    note = ctx.route_notes["onnx", "int8-ptq"]
    assert note.startswith("PReLU split, ") and note.count("quantize.ort_prelu") == 1
    assert not any(n.op_type == "PRelu" for n in onnx.load(str(tmp_path / "out.onnx")).graph.node)
