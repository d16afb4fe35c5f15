"""Bias correction of onnxruntime QDQ models: mean outputs move back to FP32's, the graph still
fuses into integer kernels, bias-less convolutions get a bias; the graph runs it rests on."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from quantize.bias_correction import _channel_means, correct_biases
from quantize.exporters.onnx import quantize_onnx, torch_to_onnx
from quantize.graph_runs import _pruned, float_targets, run_tensors


class _Net(nn.Module):
    """conv -> ReLU -> conv (no bias) -> conv: a fused activation, a missing bias, a plain conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.c = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(torch.relu(self.a(x))))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bc")
    rng = np.random.default_rng(0)
    faces = (rng.standard_normal((64, 3, 16, 16)) + 0.5).astype(np.float32)
    fp32 = torch_to_onnx(_Net().eval(), torch.from_numpy(faces[:2]), folder / "net.fp32.onnx")
    raw = quantize_onnx(fp32, folder / "net.raw.onnx", faces, bias_correction=False)
    return faces, fp32, raw, folder


def _shifts(model_path, fp32, faces):
    """Mean |per-channel mean difference| to FP32 of each conv output, in graph order."""
    model, reference = onnx.load(str(model_path)), onnx.load(str(fp32))
    targets = float_targets(model, reference)
    ours = _channel_means(model, list(targets), faces, "input")
    theirs = _channel_means(reference, list(targets.values()), faces, "input")
    return [float(np.abs(ours[q] - theirs[f]).mean()) for q, f in targets.items()]


def test_correction_moves_every_mean_back_to_fp32(graphs):
    faces, fp32, raw, folder = graphs
    fixed = correct_biases(raw, fp32, faces, folder / "net.fixed.onnx")
    before, after = _shifts(raw, fp32, faces), _shifts(fixed, fp32, faces)
    assert len(before) == 3
    assert all(a < 0.5 * b for a, b in zip(after[1:], before[1:])), (before, after)
    assert after[0] <= before[0] + 1e-6  # the first conv sees exact inputs: little to correct


def test_bias_less_conv_gets_an_int32_bias_and_the_graph_still_fuses(graphs, tmp_path):
    faces, fp32, raw, folder = graphs
    fixed = correct_biases(raw, fp32, faces, tmp_path / "fixed.onnx")
    graph = onnx.load(str(fixed)).graph
    producer = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert all(len(c.input) == 3 and producer[c.input[2]].op_type == "DequantizeLinear" for c in convs)
    inits = {i.name: i for i in graph.initializer}
    assert all(inits[producer[c.input[2]].input[0]].data_type == onnx.TensorProto.INT32 for c in convs)
    assert _fused_ops(fixed, tmp_path).count("QLinearConv") == _fused_ops(raw, tmp_path).count("QLinearConv") == 3


def test_exported_int8_is_corrected_by_default(graphs, tmp_path):
    faces, fp32, raw, _ = graphs
    default = quantize_onnx(fp32, tmp_path / "net.int8.onnx", faces)
    assert not (tmp_path / "net.int8.uncorrected.onnx").exists()
    assert sum(_shifts(default, fp32, faces)) < sum(_shifts(raw, fp32, faces))


def _fused_ops(path, folder) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(folder / "optimized.onnx")).graph.node]



def test_a_run_for_early_tensors_keeps_only_the_nodes_they_need(graphs):
    faces, fp32, raw, _ = graphs
    model = onnx.load(str(raw))
    first = next(n for n in model.graph.node if n.op_type == "Conv")
    pruned = _pruned(model, [first.output[0]])
    assert 0 < len(pruned.graph.node) < len(model.graph.node) / 2
    assert [n.name for n in pruned.graph.node if n.op_type == "Conv"] == [first.name]
    full = run_tensors(model, [first.output[0], model.graph.output[0].name], faces, "input")
    alone = run_tensors(model, [first.output[0]], faces, "input")
    np.testing.assert_array_equal(alone[first.output[0]], full[first.output[0]])

