"""Activation-range equalisation keeps the FP32 function and evens out per-channel ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.registry import create_model
from quantize.equalize import equalize, find_pairs
from quantize.errors import QuantizeError
from quantize.student import Student, random_student


def _ranges(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    seen = {}

    def record(_module, _inputs, out) -> None:  # a hook that returned a value would replace `out`
        seen["peak"] = out.abs().amax(dim=(0, 2, 3))

    handle = dict(model.named_modules())[name].register_forward_hook(record)
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["peak"]


def test_pairs_of_the_pretrained_student_layout():
    pairs = find_pairs(create_model("mobilefacenet_tf"))
    names = [(p.producer, p.activation, p.consumer) for p in pairs]
    assert names[0] == ("stem.1", "stem.2", "dw.0")  # the ZeroPad before dw is skipped over
    assert names[-1] == ("conv_last.0", "conv_last.1", "gdc.0")
    assert ("blocks.0.expand.0", "blocks.0.expand.1", "blocks.0.depthwise.1") in names
    assert len(pairs) == 2 + 15  # stem and head, and one per bottleneck
    assert not any(p.consumer.endswith("project.0") for p in pairs)  # 1x1: not free to rescale


def test_equalised_model_is_the_same_function_with_even_ranges(calibration):
    faces = calibration.calibration_faces()
    student = random_student("mobilefacenet_tiny", faces, name="tiny")
    with torch.no_grad():  # uneven channels, as in a trained network
        for m in student.model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(torch.logspace(-1.5, 0.5, len(m.weight)))
    equalised, pairs = equalize(student, faces)
    assert pairs and equalised.model is not student.model
    check = calibration.check_faces()
    assert (equalised.embed(check) * student.embed(check)).sum(1).min() > 0.99999
    x = student.to_tensor(faces[:64])
    act = pairs[0].activation
    before, after = _ranges(student.model, act, x), _ranges(equalised.model, act, x)
    assert (after.min() / after.max()) > 10 * (before.min() / before.max())


class _Shortcut(nn.Module):
    """conv -> PReLU -> depthwise, but the conv's output is also added: rescaling breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.act = nn.PReLU(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return (self.dw(self.act(y)) + y).mean(dim=(2, 3))


def test_a_pair_that_is_not_one_is_refused():
    torch.manual_seed(0)
    model = _Shortcut().eval()
    with torch.no_grad():
        model.conv.weight.mul_(torch.linspace(0.01, 1, 8).view(-1, 1, 1, 1))
    student = Student(model, "shortcut", 8)
    faces = np.random.default_rng(0).integers(0, 255, (16, 112, 112, 3), dtype=np.uint8)
    assert len(find_pairs(model)) == 1
    with pytest.raises(QuantizeError, match="--no-equalize"):
        equalize(student, faces)


def test_relu6_is_not_a_pair():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=8))
    assert find_pairs(model) == []


def test_quantize_run_with_equalize_exports_the_rescaled_model(calibration, tmp_path):
    import onnx
    from onnx import numpy_helper

    from quantize.calibration import CalibrationConfig
    from quantize.pipeline import RunConfig, export_models
    from quantize.student import save_student

    faces = calibration.calibration_faces()
    student = random_student("mobilefacenet_tiny", faces, name="tiny")
    checkpoint = save_student(student.model, "mobilefacenet_tiny", tmp_path / "tiny.pt")
    weights = {}
    for flag in (False, True):
        summary = export_models(RunConfig(checkpoint, "onnx", None, tmp_path / str(flag),
                                          CalibrationConfig(size=64, check=8), equalize=flag))
        assert not summary.failures and summary.results[0].parity.min >= 0.9999
        graph = onnx.load(str(summary.results[0].path)).graph
        weights[flag] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    stem = next(k for k in weights[False] if k.startswith("stem.0") and k.endswith("weight"))
    assert not np.allclose(weights[False][stem], weights[True][stem])  # rescaled, same function
