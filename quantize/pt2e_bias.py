"""Bias correction of a converted PT2E graph (the TFLite INT8 route), as
``quantize.bias_correction`` does for onnxruntime's QDQ graphs.

INT8 rounding shifts each output channel's mean a little and the shifts add up layer after
layer; for face embeddings a systematic shift costs more than noise. PT2E has no step that puts
the means back, so this module does it on the graph ``convert_pt2e(..., fold_quantize=False)``
returns, where every convolution reads dequantized INT8 and adds a float bias:

1. the graph runs once with every quantize/dequantize op made the identity (the FP32 model it
   was quantized from, BatchNorm already folded) and records each convolution's per-channel
   mean output;
2. it runs once more as quantized, convolution by convolution in graph order: each output's
   mean is compared with the FP32 one, the difference is taken off the bias (a convolution
   without a bias gets one), and the corrected output is what later convolutions see, so each
   correction measures the graph with every earlier one applied.

litert-torch quantizes the corrected float biases to int32 when it lowers the graph. Real
student, mean cosine to FP32 on the held-back faces before -> after: every depthwise conv and
``conv_last`` float 0.99669 -> 0.99700; nothing float 0.96992 -> 0.97328 (the PReLU slopes'
noise is no mean shift); through the PReLU split 0.99481 -> 0.99552 and 0.99361 -> 0.99487.
"""

from __future__ import annotations

import torch
import torchao.quantization.pt2e  # noqa: F401  registers the quantized_decomposed ops named below
from torch import fx

_QDQ = (torch.ops.quantized_decomposed.quantize_per_tensor.default,
        torch.ops.quantized_decomposed.dequantize_per_tensor.default,
        torch.ops.quantized_decomposed.quantize_per_channel.default,
        torch.ops.quantized_decomposed.dequantize_per_channel.default)
_CONV = torch.ops.aten.conv2d.default
_BIAS = 2  # aten.conv2d(input, weight, bias=None, stride, padding, dilation, groups)


def correct_pt2e_biases(model: fx.GraphModule, faces: torch.Tensor) -> int:
    """Correct the biases of ``model`` (a converted PT2E graph) in place on ``faces`` (NCHW
    float, the calibration faces or a subset); returns how many convolutions were corrected."""
    with torch.no_grad():
        corrector = _Corrector(model, conv_means(model, faces, quantized=False))
        corrector.run(faces)
    _add_biases(model, corrector.new_biases)
    return corrector.corrected


def conv_means(model: fx.GraphModule, faces: torch.Tensor, quantized: bool) -> dict[str, torch.Tensor]:
    """Per convolution of ``model``: its per-channel mean output on ``faces``, as quantized or
    with every quantize/dequantize op made the identity (the FP32 model)."""
    with torch.no_grad():
        recorder = _ConvMeans(model, quantized)
        recorder.run(faces)
    return recorder.means


def _is_conv(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target == _CONV


class _ConvMeans(fx.Interpreter):
    """Runs the graph (quantize/dequantize as the identity unless ``quantized``) and records
    each convolution's per-channel mean output."""

    def __init__(self, model: fx.GraphModule, quantized: bool) -> None:
        super().__init__(model)
        self.quantized = quantized
        self.means: dict[str, torch.Tensor] = {}

    def run_node(self, node: fx.Node):
        if not self.quantized and node.op == "call_function" and node.target in _QDQ:
            return self.env[node.args[0]]
        out = super().run_node(node)
        if _is_conv(node):
            self.means[node.name] = out.mean((0, 2, 3))
        return out


class _Corrector(fx.Interpreter):
    """Runs the quantized graph, moving each conv's mean output onto the FP32 one as it goes."""

    def __init__(self, model: fx.GraphModule, means: dict[str, torch.Tensor]) -> None:
        super().__init__(model)
        self.means = means
        self.new_biases: dict[fx.Node, torch.Tensor] = {}
        self.corrected = 0

    def run_node(self, node: fx.Node):
        out = super().run_node(node)
        if not _is_conv(node):
            return out
        shift = out.mean((0, 2, 3)) - self.means[node.name]
        bias = node.args[_BIAS] if len(node.args) > _BIAS else None
        if bias is None:
            self.new_biases[node] = -shift
        else:
            _replace_attribute(self.module, bias.target, _attribute(self.module, bias.target) - shift)
        self.corrected += 1
        return out - shift[None, :, None, None]


def _attribute(model: torch.nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)


def _replace_attribute(model: torch.nn.Module, target: str, value: torch.Tensor) -> None:
    """Point ``target`` at a new tensor. Never in place: ``torch.export`` graphs share their
    parameters with the module they were exported from, so an in-place update changed the
    student itself (and every later export and parity check of the same run)."""
    owner_name, _, name = target.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    old = getattr(owner, name)
    if isinstance(old, torch.nn.Parameter):
        setattr(owner, name, torch.nn.Parameter(value.detach().clone(), requires_grad=old.requires_grad))
    elif name in owner._buffers:
        owner._buffers[name] = value.detach().clone()
    else:
        setattr(owner, name, value.detach().clone())


def _add_biases(model: fx.GraphModule, biases: dict[fx.Node, torch.Tensor]) -> None:
    """Give each bias-less convolution its correction as a bias (a float constant)."""
    for node, bias in biases.items():
        name = f"{node.name}_corrected_bias"
        model.register_buffer(name, bias.clone())
        with model.graph.inserting_before(node):
            attribute = model.graph.get_attr(name)
        args = list(node.args) + [None] * max(0, _BIAS + 1 - len(node.args))
        args[_BIAS] = attribute
        node.args = tuple(args)
    model.recompile()
