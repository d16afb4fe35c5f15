"""Bias correction of a converted PT2E graph puts each conv's mean output back on FP32's."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class _Net(nn.Module):
    """A conv with a bias, one without, a residual sum: the cases the twin has."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 16, 3, padding=1)
        self.second = nn.Conv2d(16, 16, 1, bias=False)
        self.head = nn.Conv2d(16, 8, 3, stride=2)

    def forward(self, x):
        y = torch.relu(self.first(x))
        return self.head(torch.relu(y + self.second(y))).flatten(1)


@pytest.fixture()
def converted():
    """The net quantized by PT2E (XNNPACK quantizer), weights coarse enough to shift means."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from quantize.pt2e import xnnpack_quantizer

    torch.manual_seed(0)
    net = _Net().eval()
    faces = torch.rand(32, 3, 16, 16)
    batch = torch.export.Dim("batch", min=1, max=64)
    graph = torch.export.export(net, (faces[:2],), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(graph, xnnpack_quantizer(weight_qmax=7))  # 4-bit weights: big shifts
    with torch.no_grad():
        prepared(faces)
    converted = allow_exported_model_train_eval(convert_pt2e(prepared, fold_quantize=False))
    converted.source = net  # the FP32 module it was exported from (shares tensors with it)
    return converted, faces


def test_corrected_means_match_fp32(converted):
    from quantize.pt2e_bias import conv_means, correct_pt2e_biases

    model, faces = converted
    fp32 = conv_means(model, faces, quantized=False)
    assert len(fp32) == 3 and _largest_shift(conv_means(model, faces, quantized=True), fp32) > 1e-3
    assert correct_pt2e_biases(model, faces) == 3
    assert _largest_shift(conv_means(model, faces, quantized=True), fp32) < 1e-5


def test_the_exported_module_is_left_alone(converted):
    """The graph shares its bias tensors with the module it was exported from: correcting them
    in place changed the student itself (every later export of the run, and the parity
    reference, then used the corrected student)."""
    from quantize.pt2e_bias import correct_pt2e_biases

    model, faces = converted
    before = {k: v.clone() for k, v in model.source.state_dict().items()}
    correct_pt2e_biases(model, faces)
    after = model.source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _largest_shift(means: dict, reference: dict) -> float:
    return max(float((means[name] - reference[name]).abs().max()) for name in reference)


def test_a_conv_without_bias_gets_one(converted):
    from quantize.pt2e_bias import correct_pt2e_biases

    model, faces = converted
    convs = [n for n in model.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert sum(len(n.args) < 3 or n.args[2] is None for n in convs) == 1
    with torch.no_grad():
        expected_shape = model(faces).shape
    correct_pt2e_biases(model, faces)
    assert all(len(n.args) > 2 and n.args[2] is not None for n in convs)
    with torch.no_grad():
        assert model(faces).shape == expected_shape  # the graph still runs after recompiling


def test_imports_on_its_own():
    """The module names torchao's quantize/dequantize ops at import: it must register them
    itself, not rely on the caller having imported torchao first."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", "import quantize.pt2e_bias"], cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
