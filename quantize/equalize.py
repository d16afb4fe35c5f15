"""Activation-range equalisation: a per-channel rescaling that FP32 does not notice and INT8 does.

INT8 runtimes quantize an activation tensor with one scale for all its channels (per-tensor),
while a trained network's channels span very different ranges: in the MobileFaceNet students
some channels of a convolution's output reach 40, others 0.5, and those small channels keep
only a few of the 256 levels. Where that tensor feeds a *depthwise* convolution through a
positively homogeneous activation (PReLU, ReLU: ``act(s * x) = s * act(x)`` for ``s > 0``),
every channel ``i`` can be scaled by ``s_i`` in the producing convolution (weights and bias)
and by ``1 / s_i`` in the depthwise one. The FP32 function is unchanged, and both
convolutions' per-channel weight quantization is too (each channel has its own scale), but
the activation between them now has one range in every channel: each channel keeps all 256
levels. MobileFaceNet has such a pair in every bottleneck (expand -> depthwise), after the
stem and before the GDConv head. It is the data-aware cousin of cross-layer equalisation
(Nagel et al., "Data-Free Quantization", 2019), restricted to the pairs where it costs nothing.

The pairs are found by walking the model's modules in definition order; the result is checked
against the original on real faces and refused (``QuantizeError``) if it is not the same function.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from quantize.errors import QuantizeError
from quantize.student import Student, fold_batchnorm

log = logging.getLogger(__name__)
HOMOGENEOUS = (nn.PReLU, nn.ReLU)  # FadingPReLU is a PReLU; ReLU6 is not homogeneous
PASS_THROUGH = (nn.Identity, nn.ZeroPad2d)  # zero padding commutes with scaling
MAX_SCALE = 1000.0  # a near-dead channel is not blown up without bound
SAME_FUNCTION = 0.99999  # minimum cosine between the original and the equalised model


@dataclass(frozen=True)
class Pair:
    """A convolution whose output reaches a depthwise convolution through ``activation``."""

    producer: str
    activation: str
    consumer: str


def find_pairs(model: nn.Module) -> list[Pair]:
    """conv -> homogeneous activation -> [padding] -> depthwise conv chains, in module order."""
    pairs, conv, act = [], None, None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if conv is not None and act is not None and _is_depthwise_of(module, conv[1]):
                pairs.append(Pair(conv[0], act, name))
            conv, act = (name, module), None
        elif isinstance(module, HOMOGENEOUS) and conv is not None and act is None:
            act = name
        elif len(module._modules) == 0 and not isinstance(module, PASS_THROUGH):
            conv, act = None, None  # anything else (BatchNorm, Add, Linear) breaks the chain
    return pairs


def _is_depthwise_of(consumer: nn.Conv2d, producer: nn.Conv2d) -> bool:
    channels = producer.out_channels
    return consumer.groups == consumer.in_channels == consumer.out_channels == channels


@torch.no_grad()
def equalize(student: Student, faces: np.ndarray) -> tuple[Student, list[Pair]]:
    """A copy of ``student`` (BatchNorm folded) with every pair's activation ranges equalised
    on ``faces`` (aligned uint8 BGR crops); returns it and the pairs it rescaled.

    Raises:
        QuantizeError: the rescaled model is not the same function (cosine < 0.99999).
    """
    model = fold_batchnorm(student.model)
    pairs = find_pairs(model)
    if not pairs:
        return student, []
    modules = dict(model.named_modules())
    ranges = _channel_ranges(model, [modules[p.activation] for p in pairs], student.to_tensor(faces))
    for pair, r in zip(pairs, ranges):
        _rescale(modules[pair.producer], modules[pair.consumer], r)
    result = Student(model, student.arch, student.embedding_size, student.input, student.name,
                     student.checkpoint, student.checkpoint_sha256, student.licence)
    cos = float((result.embed(faces) * student.embed(faces)).sum(1).min())
    if cos < SAME_FUNCTION:
        raise QuantizeError(f"activation equalisation changed {student.arch}'s output (min cosine "
                            f"{cos:.6f}): a pair's activation is not what it seems; "
                            "use --no-equalize")
    log.info("equalised the activation ranges of %d conv -> depthwise pairs (min cosine to the "
             "original %.6f)", len(pairs), cos)
    return result, pairs


def _channel_ranges(model: nn.Module, activations: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Per-channel max |output| of each activation module over ``x``."""
    ranges: list[torch.Tensor | None] = [None] * len(activations)

    def hook(index: int):
        def record(_module, _inputs, output):
            peak = output.abs().amax(dim=(0, 2, 3))
            ranges[index] = peak if ranges[index] is None else torch.maximum(ranges[index], peak)
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(activations)]
    try:
        for start in range(0, len(x), 64):
            model(x[start:start + 64])
    finally:
        for handle in handles:
            handle.remove()
    return [r if r is not None else torch.ones(1) for r in ranges]


def _rescale(producer: nn.Conv2d, consumer: nn.Conv2d, channel_range: torch.Tensor) -> None:
    # Scale each channel up to the largest one's range; a PReLU/ReLU in between passes it on.
    target = channel_range.max()
    scale = (target / channel_range.clamp_min(target / MAX_SCALE)).clamp(1.0, MAX_SCALE)
    producer.weight.mul_(scale.view(-1, 1, 1, 1))
    if producer.bias is not None:
        producer.bias.mul_(scale)
    consumer.weight.div_(scale.view(-1, 1, 1, 1))

