"""The PReLU-split twin computes the PReLU student's function with ReLU only."""

from __future__ import annotations

import pytest
import torch

import distill.models  # noqa: F401  (registration)
from distill.registry import create_model
from edge.errors import ConfigError
from quantize.prelu_split import PReLUSplitTwin


def _student_with_wild_slopes():
    torch.manual_seed(0)
    model = create_model("mobilefacenet_tf").eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.PReLU):  # negative, small and large slopes, as trained
                module.weight.uniform_(-3.0, 9.0)
            elif isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0, 0.1)
    return model


def test_twin_is_the_same_function_without_prelu():
    model = _student_with_wild_slopes()
    twin = PReLUSplitTwin(model).eval()
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        expected, got = model(x), twin(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert not any(isinstance(m, torch.nn.PReLU) for m in twin.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in twin.modules()) > 2 * sum(
        isinstance(m, torch.nn.Conv2d) for m in model.modules())  # the price: doubled convs


def test_twin_refuses_a_relu_student():
    with pytest.raises(ConfigError, match="PReLU activations"):
        PReLUSplitTwin(create_model("mobilefacenet_tf_relu"))


@pytest.fixture(scope="module")
def split_ctx(calibration, tmp_path_factory):
    """A PReLU ``mobilefacenet_tf`` student with trained-like slopes, its FP32 ONNX exported once."""
    from quantize.context import ExportContext
    from quantize.exporter import run_export
    from quantize.formats import FORMATS
    from quantize.parity import GATES, ParityGate
    from quantize.student import Student

    student = Student(_student_with_wild_slopes(), "mobilefacenet_tf", 192, name="wild")
    ctx = ExportContext(student, calibration, tmp_path_factory.mktemp("split"),
                        gates={"fp32": GATES["fp32"], "int8": ParityGate(min=0.5, mean=0.85)})
    run_export(ctx, FORMATS["onnx"], "fp32", thresholds=False)
    return ctx


@pytest.fixture()
def few_bias_faces(monkeypatch):
    """Bias correction on 8 faces: it runs the full-size twin once per conv level (52 here)."""
    import quantize.calibration as calibration

    monkeypatch.setattr(calibration, "BIAS_FACES", 8)


def _int8(ctx, folder, keep_float=()):
    """The INT8 export in ``folder``, reusing ``ctx``'s FP32 ONNX."""
    from quantize.context import ExportContext
    from quantize.exporter import run_export
    from quantize.formats import FORMATS

    other = ExportContext(ctx.student, ctx.calibration, folder, keep_float=keep_float, gates=ctx.gates)
    other.remember_onnx("fp32", ctx.fp32_onnx())
    return run_export(other, FORMATS["onnx"], "int8-ptq", thresholds=False)


def _float_conv_weights(path) -> set[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.input[1] for n in graph.node if n.op_type == "Conv" and n.input[1] not in dequantized}


@pytest.mark.realdata
@pytest.mark.usefixtures("one_torch_thread")
def test_onnx_int8_of_a_prelu_student_goes_through_the_split(split_ctx, tmp_path, few_bias_faces):
    import onnx

    result = _int8(split_ctx, tmp_path)
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    fp32_ops = [n.op_type for n in onnx.load(str(split_ctx.fp32_onnx())).graph.node]  # the plain graph
    assert "PRelu" in fp32_ops and "PRelu" not in ops  # QDQ absorbs the twin's ReLUs
    assert ops.count("Conv") > 2 * fp32_ops.count("Conv")
    assert _float_conv_weights(result.path) == set()  # every convolution quantized
    assert "PReLU split" in result.card.provenance["export"]
    assert result.parity.mean > 0.85  # the sanity gate, held by run_export too


@pytest.mark.realdata
@pytest.mark.usefixtures("one_torch_thread")
def test_keep_float_names_of_the_student_select_their_split_convs(split_ctx, tmp_path, few_bias_faces):
    result = _int8(split_ctx, tmp_path, keep_float=("dw.0", "gdc.0"))
    assert _float_conv_weights(result.path) == {
        "dw.pp.weight", "dw.pn.weight", "dw.np.weight", "dw.nn.weight", "gdc.pp.weight", "gdc.pn.weight"}
    assert result.card.provenance["keep_float"] == "dw.0,gdc.0"


@pytest.mark.realdata
@pytest.mark.usefixtures("one_torch_thread")
def test_with_float_depthwise_convs_the_plain_graph_is_quantized(split_ctx, tmp_path, few_bias_faces):
    """With every depthwise conv float, no PReLU input needs a quantizer once
    quantize.ort_float_prelu has rewritten the graph: no split, integer 1x1 convs."""
    import onnx

    from quantize.student import expand_layer_names

    result = _int8(split_ctx, tmp_path, keep_float=expand_layer_names(split_ctx.student.model, ("depthwise",)))
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    fp32_ops = [n.op_type for n in onnx.load(str(split_ctx.fp32_onnx())).graph.node]
    assert ops.count("Conv") + ops.count("MatMulIntegerToFloat") == fp32_ops.count("Conv")  # no twin
    assert "MatMulIntegerToFloat" in ops
    assert "PReLU split" not in result.card.provenance["export"]
    assert "ort_float_prelu" in result.card.provenance["export"]
    assert result.parity.mean > 0.85


def test_twin_prefix_covers_one_layer_only():
    from quantize.prelu_split import twin_prefix

    assert twin_prefix("blocks.1.depthwise.1") == "blocks.1.depthwise."
    assert not "blocks.10.depthwise.pp.1.weight".startswith(twin_prefix("blocks.1.depthwise.1"))
    assert twin_prefix("dw.0") == "dw."


def test_needs_split_only_for_prelu_mobilefacenet_tf():
    from quantize.prelu_split import needs_split

    assert needs_split(create_model("mobilefacenet_tf"))
    assert not needs_split(create_model("mobilefacenet_tf_relu"))
    assert not needs_split(create_model("mobilefacenet_tiny"))

