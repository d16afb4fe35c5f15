"""PReLU split: an exact PReLU-free twin of ``mobilefacenet_tf``, for onnxruntime INT8.

onnxruntime (like LiteRT) quantizes a convolution's output *before* its PReLU, and the slope
(up to 9.4 in the real student) multiplies that quantization noise on the negative side:
onnxruntime PTQ of the PReLU graph lands at cosine 0.951 to FP32, and runs the 33 PReLUs
unfused, slower than FP32. The twin moves every slope into weights instead, using
``PReLU_a(z) = relu(z) - a * relu(-z)``:

* the convolution ``z = conv(x)`` becomes two, ``P = relu(conv(x))`` and ``N = relu(-conv(x))``,
  each quantized with its own range (the negative side is often much smaller);
* the next convolution ``y = conv2(PReLU_a(z))`` (linear in its input) becomes
  ``conv2(P) + conv2'(N)`` with ``conv2'``'s weights scaled by ``-a`` per input channel; when
  ``y`` itself feeds a PReLU, ``-y`` is formed the same way with negated weights.

Every quantized tensor is then a ReLU output or a sum of convolutions, every activation fuses
into ``QLinearConv``, and the FP32 function is unchanged (max abs difference 3e-5 on
embeddings of size ~40). The price is MACs: the convolutions around each PReLU run twice
(depthwise ones four times). In INT8 that beats onnxruntime's FP32 PReLU graph run by its
branching PRelu kernel, but not the branch-free FP32 file the kit ships (``quantize.ort_prelu``):
on an AVX2 CPU without VNNI, u8s8 convolutions gain too little per multiply-add to pay for two.

``quantize.exporters.onnx`` uses the twin for the INT8 export of every PReLU
``mobilefacenet_tf`` student; ``--keep-float`` names of the original model (``dw.0``) select
every twin convolution made from that layer (``twin_prefix``). Alternatives measured on the
real student and dropped (held-back faces, mean cosine to FP32): one conv over ``cat(P, N)``
for the 1x1 consumers (one shared range) 0.9920 against 0.9935; recombining ``P - a * N``
before the consumer 0.9645; equalising the PReLU student first 0.9841; summing the halves in
one grouped convolution 0.9953 but 66 ms (no fast onnxruntime kernel for two inputs per
group); QAT of the twin 0.9886. Figures and commands:
``quantize/reports/maskinv_mobilefacenet_tflite/README.md``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from edge.errors import ConfigError

# What an INT8 card's provenance says when its export went through the twin.
ROUTE_NOTE = ("through the PReLU split (quantize.prelu_split: the exact ReLU-only twin, "
              "slopes moved into the next convolution's weights)")


def _parts(block: nn.Sequential) -> tuple[bool, nn.Conv2d, torch.Tensor | None]:
    """(has a TF-'SAME' pad, the conv, its PReLU slopes or None) of a ``TFConv``."""
    pad = isinstance(block[0], nn.ZeroPad2d)
    conv = block[1] if pad else block[0]
    slope = block[-1].weight.detach().clone() if type(block[-1]) is nn.PReLU else None
    return pad, conv, slope


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, pad: bool) -> nn.Module:
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, groups=conv.groups, bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), new) if pad else new


def _scaled_input(conv: nn.Conv2d, slope: torch.Tensor) -> torch.Tensor:
    """``conv``'s weights for the N input: ``-slope`` per input channel."""
    view = (1, -1, 1, 1) if conv.groups == 1 else (-1, 1, 1, 1)  # depthwise: in == out channel
    return -slope.view(view) * conv.weight.detach()


class SplitSign(nn.Module):
    """``x -> (relu(conv x), relu(-conv x))``: a conv followed by PReLU, slopes left to the consumer."""

    def __init__(self, block: nn.Sequential) -> None:
        super().__init__()
        pad, conv, _ = _parts(block)
        w, b = conv.weight.detach(), conv.bias.detach()
        self.pos, self.neg = _conv_like(conv, w, b, pad), _conv_like(conv, -w, -b, pad)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(self.pos(x)), F.relu(self.neg(x))


class PairConv(nn.Module):
    """``(P, N)`` of a PReLU with slopes ``slope_in`` -> the block's conv of PReLU(z); when the
    block ends in a PReLU itself, returns its own ``(P, N)`` pair instead."""

    def __init__(self, block: nn.Sequential, slope_in: torch.Tensor) -> None:
        super().__init__()
        pad, conv, slope_out = _parts(block)
        w, b, wn = conv.weight.detach(), conv.bias.detach(), _scaled_input(conv, slope_in)
        self.pp, self.pn = _conv_like(conv, w, b, pad), _conv_like(conv, wn, None, pad)
        self.split = slope_out is not None
        if self.split:
            self.np, self.nn = _conv_like(conv, -w, -b, pad), _conv_like(conv, -wn, None, pad)

    def forward(self, pair):
        p, n = pair
        y = self.pp(p) + self.pn(n)
        return (F.relu(y), F.relu(self.np(p) + self.nn(n))) if self.split else y


class SplitBlock(nn.Module):
    """An inverted residual block of the twin."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.expand = SplitSign(block.expand)
        self.depthwise = PairConv(block.depthwise, _parts(block.expand)[2])
        self.project = PairConv(block.project, _parts(block.depthwise)[2])
        self.residual = block.add is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class PReLUSplitTwin(nn.Module):
    """The PReLU-free twin of a ``MobileFaceNetTF`` (PReLU variant); same FP32 function."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if type(model.stem[-1]) is not nn.PReLU:  # FadingPReLU (the ReLU twin) is a subclass
            raise ConfigError("the PReLU split needs a mobilefacenet_tf student with PReLU "
                              f"activations; this one ends its stem in {type(model.stem[-1]).__name__}")
        self.stem = SplitSign(model.stem)
        self.dw = PairConv(model.dw, _parts(model.stem)[2])
        self.pw = PairConv(model.pw, _parts(model.dw)[2])
        self.blocks = nn.Sequential(*(SplitBlock(b) for b in model.blocks))
        self.conv_last = SplitSign(model.conv_last)
        self.gdc = PairConv(model.gdc, _parts(model.conv_last)[2])
        self.linear, self.embedding = copy.deepcopy(model.linear), copy.deepcopy(model.embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pw(self.dw(self.stem(x))))
        return self.embedding(self.linear(self.gdc(self.conv_last(x)))).flatten(1)


def needs_split(model: nn.Module) -> bool:
    """Whether ``model`` is a ``mobilefacenet_tf`` with PReLU activations (the twin applies)."""
    stem = getattr(model, "stem", None)
    return isinstance(stem, nn.Sequential) and type(stem[-1]) is nn.PReLU and hasattr(model, "gdc")


def twin_prefix(layer: str) -> str:
    """The twin's module prefix for a convolution of the original (``dw.0`` -> ``dw.``,
    ``blocks.3.depthwise.1`` -> ``blocks.3.depthwise.``): every conv made from that layer."""
    return layer.rsplit(".", 1)[0] + "."
