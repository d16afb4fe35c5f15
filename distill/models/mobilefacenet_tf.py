"""MobileFaceNet as trained by sirius-ai/MobileFaceNet_TF, with its pretrained weights.

The kit's real pretrained MobileFaceNet (MobileFaceNet.tflite, MS1M-refine-v2, 192-d) differs
from the paper table in two places: a linear 1x1 convolution after the first depthwise
convolution, and a linear 512->512 1x1 convolution between the GDConv and the embedding.
Its BatchNorms are folded into the convolutions, so every convolution here has a bias and
no BatchNorm: fine-tuning changes the function only as fast as the weights move. TensorFlow
'SAME' padding of the stride-2 3x3 convolutions pads right/bottom only, reproduced with an
explicit ZeroPad2d. ``load_tflite_weights`` copies the .tflite's tensors in; outputs then agree
with the TFLite interpreter to float precision (tests/test_mobilefacenet_tf.py).

This is the student that masked template KD starts from (MaskInv initialises the student
with the teacher's weights): same size as the paper's MobileFaceNet (1.2M parameters).

``mobilefacenet_tf_relu`` is its quantization-friendly twin: ReLU where the original has PReLU
(ReLU fuses into integer convolutions; PReLU stays float in onnxruntime, PT2E and LiteRT).
Its activations are ``FadingPReLU`` at fade 0, so it starts from a PReLU checkpoint and
``student.prelu_fade_steps`` fades the slopes out during distillation.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.models.layers import Add, FadingPReLU
from distill.registry import register_model

# (expansion, out channels, blocks, first stride), as in the .tflite graph.
STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
EMBEDDING = 192
# sirius-ai feeds (x - 127.5) / 128; the kit's students take (x - 127.5) / 127.5.
INPUT_RESCALE = 127.5 / 128.0


class TFConv(nn.Sequential):
    """[ZeroPad2d] -> Conv2d (bias) -> [PReLU | ReLU]; TF 'SAME' or 'VALID' padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: str | None = "prelu", valid: bool = False) -> None:
        layers: list[nn.Module] = []
        pad = 0 if valid else kernel // 2
        if stride == 2 and kernel > 1 and not valid:
            layers.append(nn.ZeroPad2d((0, 1, 0, 1)))  # TF SAME on even sizes: right/bottom only
            pad = 0
        layers.append(nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=True))
        if act == "prelu":
            layers.append(nn.PReLU(cout))
        elif act == "relu":
            layers.append(FadingPReLU(cout))  # fade 0: ReLU
        elif act is not None:
            raise ValueError(f"act must be 'prelu', 'relu' or None, got {act!r}")
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """Expand 1x1 (act) -> depthwise 3x3 (act) -> project 1x1 (linear) [+ input]."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, act: str = "prelu") -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = TFConv(cin, hidden, act=act)
        self.depthwise = TFConv(hidden, hidden, 3, stride, groups=hidden, act=act)
        self.project = TFConv(hidden, cout, act=None)
        self.add = Add() if stride == 1 and cin == cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return self.add(x, y) if self.add is not None else y


class MobileFaceNetTF(nn.Module):
    """sirius-ai's MobileFaceNet; forward returns the unnormalised 192-d embedding."""

    def __init__(self, embedding_size: int | None = EMBEDDING, act: str = "prelu") -> None:
        super().__init__()
        self.embedding_size = EMBEDDING
        if embedding_size not in (None, EMBEDDING):
            raise ValueError(f"mobilefacenet_tf has a {EMBEDDING}-d embedding (its pretrained "
                             f"weights), got {embedding_size}")
        self.stem = TFConv(3, 64, 3, 2, act=act)
        self.dw = TFConv(64, 64, 3, groups=64, act=act)
        self.pw = TFConv(64, 64, act=None)
        blocks, cin = [], 64
        for expansion, cout, count, stride in STAGES:
            for i in range(count):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion, act))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv_last = TFConv(cin, 512, act=act)
        self.gdc = TFConv(512, 512, 7, groups=512, act=None, valid=True)
        self.linear = TFConv(512, 512, act=None)
        self.embedding = TFConv(512, EMBEDDING, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(self.stem(x)))
        x = self.conv_last(self.blocks(x))
        return self.embedding(self.linear(self.gdc(x))).flatten(1)


@register_model()
def mobilefacenet_tf(embedding_size: int | None = EMBEDDING, **_: object) -> MobileFaceNetTF:
    """sirius-ai MobileFaceNet layout (192-d); load its weights with ``load_tflite_weights``."""
    return MobileFaceNetTF(embedding_size)


@register_model()
def mobilefacenet_tf_relu(embedding_size: int | None = EMBEDDING, **_: object) -> MobileFaceNetTF:
    """``mobilefacenet_tf`` with ReLU (fading PReLU slopes): loads its PReLU checkpoints."""
    return MobileFaceNetTF(embedding_size, act="relu")


def load_tflite_weights(model: MobileFaceNetTF, path: str) -> MobileFaceNetTF:
    """Copy MobileFaceNet.tflite's convolutions, biases and PReLU slopes into ``model``.

    Raises:
        ModelFileError: the file is not the expected graph (op or tensor counts differ).
    """
    from distill.models.tflite_weights import read_layers

    convs, slopes = read_layers(path)
    torch_convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    torch_prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    from edge.errors import ModelFileError

    if len(convs) != len(torch_convs) or len(slopes) != len(torch_prelus):
        raise ModelFileError(f"{path}: {len(convs)} convolutions / {len(slopes)} PReLUs, expected "
                             f"{len(torch_convs)} / {len(torch_prelus)}: not sirius-ai's MobileFaceNet")
    with torch.no_grad():
        for (weight, bias), conv in zip(convs, torch_convs):
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(torch.from_numpy(bias))
        for slope, prelu in zip(slopes, torch_prelus):
            prelu.weight.copy_(torch.from_numpy(slope))
        model.stem[-2].weight.mul_(INPUT_RESCALE)  # our (x-127.5)/127.5 input -> theirs /128
    return model
