"""QAT (torchao PT2E) of a tiny random student: training, BatchNorm and observer schedules,
conversion, export to every format, and the QAT-specific checks of the ONNX file.

Tiny random student (BatchNorm statistics measured on real faces), real faces from the data root.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge.card import ModelCard, card_path
from edge.errors import ConfigError
from quantize.context import ExportContext
from quantize.exporter import run_export
from quantize.formats import FORMATS
from quantize.parity import GATES, ParityGate
from quantize.qat import QATConfig, run_qat

SANITY_INT8 = ParityGate(min=0.5, mean=0.85)

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def qat(tiny, calibration):
    return run_qat(tiny, calibration, QATConfig(steps=4, batch_size=8, freeze_observer_step=2))


def test_qat_trains_and_converts(qat):
    assert len(qat.losses) == 4 and all(np.isfinite(qat.losses))
    targets = {str(n.target) for n in qat.model.graph.nodes}
    assert any("quantize_per_tensor" in t for t in targets) and any("dequantize" in t for t in targets)


@pytest.fixture(scope="module")
def qat_ctx(qat, tiny, calibration, tmp_path_factory):
    # One context for the three formats, so the QAT ONNX is exported once.
    return ExportContext(tiny, calibration, tmp_path_factory.mktemp("qat"), qat_model=qat.model,
                         gates={"fp32": GATES["fp32"], "int8": SANITY_INT8})


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_qat_exports_to_every_format(qat_ctx, fmt):
    result = run_export(qat_ctx, FORMATS[fmt], "int8-qat", thresholds=False)
    assert "QAT" in ModelCard.load(card_path(result.path)).provenance["export"]
    assert result.parity.mean > SANITY_INT8.mean
    if fmt == "onnx":  # weights stored as INT8, not quantized on every call
        import onnx

        graph = onnx.load(str(result.path)).graph
        constants = {t.name for t in graph.initializer}
        assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in constants]
        assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4 for t in graph.initializer)
        zero_types = {t.name: t.data_type for t in graph.initializer}
        activation_zeros = {zero_types[n.input[2]] for n in graph.node
                            if n.op_type == "QuantizeLinear" and n.input[0] not in constants}
        assert activation_zeros == {onnx.TensorProto.UINT8}  # u8s8: what onnxruntime fuses
        assert "PRelu" not in {n.op_type for n in graph.node}  # written branch-free


@pytest.mark.slow
def test_qat_onnx_with_float_depthwise_keeps_prelu_inputs_float(tiny, calibration, tmp_path):
    """With the depthwise convs float (the real student's QAT), the convolutions before them
    return float to their PReLU (quantize.ort_float_prelu): integer kernels, no requantization
    there, and the file still passes its (sanity) gate through edge/."""
    import onnx

    from quantize.student import expand_layer_names

    keep = expand_layer_names(tiny.model, ("depthwise",))
    result = run_qat(tiny, calibration, QATConfig(steps=2, batch_size=8, freeze_observer_step=1), keep)
    ctx = ExportContext(tiny, calibration, tmp_path, keep_float=keep, qat_model=result.model,
                        gates={"fp32": GATES["fp32"], "int8": SANITY_INT8})
    exported = run_export(ctx, FORMATS["onnx"], "int8-qat", thresholds=False)
    ops = [n.op_type for n in onnx.load(str(exported.path)).graph.node]
    assert "MatMulIntegerToFloat" in ops  # the expansions
    stem = next(n for n in onnx.load(str(exported.path)).graph.node if n.op_type == "Conv")
    assert stem.output[0] not in {i for n in onnx.load(str(exported.path)).graph.node
                                  if n.op_type == "QuantizeLinear" for i in n.input}  # read as float
    assert "ort_float_prelu" in ModelCard.load(card_path(exported.path)).provenance["export"]
    assert exported.parity.mean > SANITY_INT8.mean


def test_qat_with_batchnorm_schedule(tiny, calibration):
    # BN trains for 2 steps, then freezes; convert then folds it (PT2E's conv-bn patterns: ~1 min).
    result = run_qat(tiny, calibration, QATConfig(steps=4, batch_size=8, freeze_bn_step=2))
    with torch.no_grad():
        out = result.model(tiny.to_tensor(calibration.check_faces()))
    cos = torch.nn.functional.cosine_similarity(out, torch.from_numpy(tiny.embed(calibration.check_faces())))
    assert cos.mean() > SANITY_INT8.mean


def test_pt2e_keep_float(tiny):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from quantize.pt2e import xnnpack_quantizer

    def conv_inputs(names):
        graph = torch.export.export(tiny.model, (tiny.to_tensor(np.zeros((2, 112, 112, 3), np.uint8)),)).module()
        prepared = prepare_pt2e(graph, xnnpack_quantizer(names))
        convs = [n for n in prepared.graph.nodes if n.target == torch.ops.aten.conv2d.default]
        return [[a.op for a in c.args[:2]] for c in convs]

    assert conv_inputs(())[0] == ["call_module", "call_module"]  # observed input and weight
    kept = conv_inputs(("stem.0.0",))
    assert kept[0] == ["placeholder", "get_attr"] and kept[1] == ["call_module", "call_module"]
    with pytest.raises(ConfigError, match="match no operation"):
        conv_inputs(("stem.9",))


def test_pt2e_float_prelu_inputs(tiny):
    """Where a PReLU feeds only float depthwise convs, the conv before it keeps observed inputs
    and an unobserved output (what the onnxruntime export computes); other convs keep theirs,
    also one whose PReLU feeds a float full conv (which the export leaves as it is)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from quantize.pt2e import xnnpack_quantizer
    from quantize.student import expand_layer_names

    keep = expand_layer_names(tiny.model, ("depthwise",))

    def prelu_inputs(float_prelu_inputs, keep=keep):
        graph = torch.export.export(tiny.model, (tiny.to_tensor(np.zeros((2, 112, 112, 3), np.uint8)),)).module()
        prepared = prepare_pt2e(graph, xnnpack_quantizer(keep, float_prelu_inputs=float_prelu_inputs))
        convs = [n for n in prepared.graph.nodes if n.target == torch.ops.aten.conv2d.default]
        quantized = [c for c in convs if [a.op for a in c.args[:2]] == ["call_module", "call_module"]]
        return quantized, [c for c in quantized if any(u.target == torch.ops.aten.prelu.default
                                                       for u in c.users)]

    quantized, direct = prelu_inputs(False)
    assert quantized and not direct  # an observer between every quantized conv and its PReLU
    quantized, direct = prelu_inputs(True)
    assert direct and len(direct) < len(quantized)  # inputs observed, output not; others as before
    assert not prelu_inputs(True, keep=("blocks.1.project.0",))[1]  # a float full conv reads it


def test_qat_config_is_validated():
    with pytest.raises(ConfigError, match="freeze_bn_step"):
        QATConfig(steps=10, freeze_bn_step=11)
    assert QATConfig(steps=8, freeze_bn_step=None).bn_step == 4
    assert QATConfig(steps=8).observer_step == 6
    with pytest.raises(ConfigError, match="faces must be >= 0"):
        QATConfig(faces=-1)


def test_qat_on_utkface_faces_leaves_out_the_parity_check_faces(tiny, calibration):
    from quantize.calibration import load_training_faces

    # Seed 0 picks the calibration split's own UTKFace faces first, its 4 check faces among them.
    unmasked, masked = load_training_faces(calibration, 48, seed=0, progress=False)
    checks = calibration.unmasked[calibration.n_calib:]
    assert 40 <= len(unmasked) == len(masked) <= 44
    assert not any((face == check).all() for face in unmasked for check in checks)
    result = run_qat(tiny, calibration, QATConfig(steps=2, batch_size=8, faces=48))
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
