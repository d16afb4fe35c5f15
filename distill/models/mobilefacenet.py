"""MobileFaceNet student (Chen et al., 2018, arXiv:1804.07573) and a quantization-friendly twin.

Paper table, 112x112 input:
    conv3x3 s2 64 -> depthwise conv3x3 64 -> bottlenecks (t, c, n, s) =
    (2,64,5,2) (4,128,1,2) (2,128,6,1) (4,128,1,2) (2,128,2,1) -> conv1x1 512 ->
    linear GDConv7x7 (depthwise) -> linear conv1x1 to the embedding -> BN.
The expansion ``t`` multiplies each bottleneck's *input* channels, as in MobileNetV2.

``mobilefacenet_relu*`` swap PReLU for ReLU: after INT8 conversion PReLU stays float in
onnxruntime, torchao PT2E and litert-torch (see shared/TOOLCHAIN.md) while conv-bn-relu fuses into
one integer kernel. Every conv-bn(-act) is a fusable ``ConvBNAct`` and every residual add is an
``Add`` module, so QAT can observe it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from distill.models.layers import Add, ConvBNAct
from distill.registry import register_model

# (expansion t, out channels c, repeats n, first stride s), the paper's Table 1.
PAPER_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)
TINY_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 8, 1, 2),
    (2, 16, 1, 2),
    (2, 16, 1, 1),
    (2, 16, 1, 2),
    (2, 16, 1, 1),
)
INPUT_SIZE = 112


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, linear 1x1 project (+ skip)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int, act: str) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.expand = ConvBNAct(in_ch, hidden, 1, act=act)
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=act)
        self.project = ConvBNAct(hidden, out_ch, 1, act=None)
        self.add = Add() if stride == 1 and in_ch == out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return self.add(out, x) if self.add is not None else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet; ``forward`` returns the unnormalised embedding ``(N, embedding_size)``.

    Args:
        settings: bottleneck rows ``(t, c, n, s)``.
        stem_channels: width of the first conv and the depthwise conv after it.
        head_channels: width of the conv1x1 before the GDConv.
        embedding_size: output dimension.
        act: ``"prelu"`` (paper), ``"relu"`` or ``"relu6"``.
    """

    def __init__(
        self,
        settings: Sequence[tuple[int, int, int, int]] = PAPER_SETTINGS,
        stem_channels: int = 64,
        head_channels: int = 512,
        embedding_size: int = 128,
        act: str = "prelu",
    ) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.stem = nn.Sequential(
            ConvBNAct(3, stem_channels, 3, 2, act=act),
            ConvBNAct(stem_channels, stem_channels, 3, groups=stem_channels, act=act),
        )
        self.blocks, width = _make_blocks(settings, stem_channels, act)
        self.head = ConvBNAct(width, head_channels, 1, act=act)
        # The feature map is 7x7 at 112 input: a 7x7 depthwise conv without padding (GDConv)
        # weights each position instead of average pooling (the paper's point).
        self.gdconv = ConvBNAct(
            head_channels, head_channels, 7, groups=head_channels, act=None, padding=0
        )
        # Linear conv1x1 + BN: the same maths as Linear(bias=False) + BatchNorm1d, but fusable.
        self.embedding = ConvBNAct(head_channels, embedding_size, 1, act=None)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return torch.flatten(self.embedding(self.gdconv(x)), 1)


def _make_blocks(
    settings: Sequence[tuple[int, int, int, int]], in_ch: int, act: str
) -> tuple[nn.Sequential, int]:
    blocks = []
    for expansion, out_ch, repeats, stride in settings:
        for i in range(repeats):
            blocks.append(Bottleneck(in_ch, out_ch, stride if i == 0 else 1, expansion, act))
            in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _create_mobilefacenet(**kwargs) -> MobileFaceNet:
    return MobileFaceNet(**kwargs)


@register_model()
def mobilefacenet(**kwargs) -> MobileFaceNet:
    """MobileFaceNet as in the paper: PReLU, 128-d embedding (1,003,136 parameters)."""
    return _create_mobilefacenet(**{"embedding_size": 128, "act": "prelu", **kwargs})


@register_model()
def mobilefacenet_512(**kwargs) -> MobileFaceNet:
    """MobileFaceNet with a 512-d embedding (PReLU)."""
    return _create_mobilefacenet(**{"embedding_size": 512, "act": "prelu", **kwargs})


@register_model()
def mobilefacenet_relu(**kwargs) -> MobileFaceNet:
    """Quantization-friendly MobileFaceNet: ReLU (fuses into INT8 convs), 128-d embedding."""
    return _create_mobilefacenet(**{"embedding_size": 128, "act": "relu", **kwargs})


@register_model()
def mobilefacenet_relu_512(**kwargs) -> MobileFaceNet:
    """Quantization-friendly MobileFaceNet: ReLU, 512-d embedding."""
    return _create_mobilefacenet(**{"embedding_size": 512, "act": "relu", **kwargs})


@register_model()
def mobilefacenet_tiny(**kwargs) -> MobileFaceNet:
    """A few-channel MobileFaceNet for tests: same topology and 112x112 input, 16-d embedding."""
    defaults = {"settings": TINY_SETTINGS, "stem_channels": 8, "head_channels": 32}
    return _create_mobilefacenet(**{**defaults, "embedding_size": 16, "act": "prelu", **kwargs})


@register_model()
def mobilefacenet_relu_tiny(**kwargs) -> MobileFaceNet:
    """``mobilefacenet_tiny`` with ReLU, for fast QAT/export tests."""
    return mobilefacenet_tiny(**{"act": "relu", **kwargs})
