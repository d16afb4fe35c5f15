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
