"""Building blocks shared by the students: fusable conv-bn-act and an observable residual add."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("prelu", "relu", "relu6")


def make_activation(name: str, channels: int) -> nn.Module:
    """Return the activation module ``name`` for ``channels`` channels.

    PReLU learns one slope per channel (the paper's choice); ReLU and ReLU6 have no parameters
    and fuse into integer convolutions after INT8 conversion, where PReLU stays float.

    Raises:
        ValueError: ``name`` is not one of ``ACTIVATIONS``.
    """
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> optional activation, as children ``0``, ``1``, ``2``.

    A plain ``Sequential`` so ``torch.ao.quantization.fuse_modules(m, [["0", "1", "2"]])`` and
    the PT2E conv-bn folding both see the pattern; ``act=None`` gives a linear conv-bn.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "prelu",
        padding: int | None = None,
    ) -> None:
        pad = kernel // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(make_activation(act, out_ch))
        super().__init__(*layers)


class FadingPReLU(nn.PReLU):
    """A PReLU whose slopes can be faded to zero: ``prelu(x, fade * weight)``.

    ``fade`` 1 is the PReLU it was loaded from, 0 (the default) is a plain ReLU, which is what
    inference and export see. Turning a trained PReLU network into its ReLU twin in one jump
    loses most of what it knew (the pretrained MobileFaceNet's slopes reach +-9); fading them
    over a few hundred training steps (``student.prelu_fade_steps``) lets the weights follow.
    The slopes keep PReLU's parameter name, so a PReLU checkpoint loads strictly; at fade 0
    they are unused and do not reach an exported graph.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.fade = 0.0  # a Python float, not a buffer: export sees a constant branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fade == 0.0:
            return torch.relu(x)
        return nn.functional.prelu(x, self.weight * self.fade)


def set_prelu_fade(model: nn.Module, fade: float) -> int:
    """Set ``fade`` (clipped to [0, 1]) on every ``FadingPReLU`` of ``model``; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, FadingPReLU)]
    for layer in layers:
        layer.fade = min(max(float(fade), 0.0), 1.0)
    return len(layers)


class Add(nn.Module):
    """Elementwise ``x + y`` as a module.

    A module (not ``+`` in ``forward``) so eager-mode QAT can swap it for an observed add
    (``torch.ao.nn.quantized.FloatFunctional``) and so graph quantizers see a named node.
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y
