"""The PT2E quantizer shared by QAT and the TFLite PTQ export: torchao's XNNPACK quantizer,
optionally leaving named modules in float.

Neither the XNNPACK quantizer nor litert-torch's accepts ``set_module_name(name, None)``
("quantization_config == None is not supported yet"), so ``--keep-float`` modules are handled
the way composed PT2E quantizers divide work: a first quantizer marks their nodes as already
annotated (with no quantization), and the XNNPACK quantizer skips annotated nodes.
"""

from __future__ import annotations

import warnings

import torch
from torchao.quantization.pt2e.quantizer import (ComposableQuantizer, QuantizationAnnotation,
                                                 Quantizer, SharedQuantizationSpec)
from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

from edge.errors import ConfigError


def xnnpack_quantizer(keep_float: tuple[str, ...] = (), is_qat: bool = False,
                      weight_qmax: int = 127, float_prelu_inputs: bool = False) -> Quantizer:
    """Symmetric INT8, per-channel weights in ``[-weight_qmax, weight_qmax]``; ``keep_float``
    module names (e.g. ``dw.0``) stay float; ``float_prelu_inputs``: a convolution whose PReLU
    feeds only float depthwise convolutions returns float (``_FloatPreluInputs``)."""
    from torchao.testing.pt2e._xnnpack_quantizer import (XNNPACKQuantizer,
                                                         get_symmetric_quantization_config)

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat,
                                               weight_qmin=-weight_qmax, weight_qmax=weight_qmax)
    steps = [_KeepFloat(keep_float)] if keep_float else []
    if keep_float and float_prelu_inputs:
        steps.append(_FloatPreluInputs(config))
    with warnings.catch_warnings():
        # Known and chosen: the one PT2E quantizer both QAT and litert-torch lowering accept
        # (shared/TOOLCHAIN.md); its deprecation warning would print on every INT8 export.
        warnings.filterwarnings("ignore", message="XNNPACKQuantizer is deprecated")
        xnnpack = XNNPACKQuantizer().set_global(config)
    return ComposableQuantizer([*steps, xnnpack, _SharePadRange()])


class _SharePadRange(Quantizer):
    """Gives a zero pad the INT8 range of the tensor it pads.

    The XNNPACK quantizer leaves ``aten.pad`` unannotated, so the padded tensor gets its own
    observer: LiteRT then lowers each of the stride-2 convolutions' TF-'SAME' pads as
    TRANSPOSE -> PAD -> QUANTIZE (a requantization) -> TRANSPOSE in NCHW, outside the fused
    convolution. Zero padding cannot change a range, so sharing it is exact.
    """

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target not in _PADS:
                continue
            source = node.args[0]
            annotation = source.meta.get("quantization_annotation")
            if annotation is None or annotation.output_qspec is None:
                continue  # e.g. the network input: the convolution after it observes the pad
            if node.meta.get("quantization_annotation") is not None:
                continue  # a --keep-float module
            shared = SharedQuantizationSpec(source)
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={source: shared}, output_qspec=shared, _annotated=True)
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        return None


_PADS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)


class _KeepFloat(Quantizer):
    """Marks every op inside the named modules as annotated with no quantization."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.filters = {name: get_module_name_filter(name) for name in names}

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        matched = set()
        for node in model.graph.nodes:
            if node.op != "call_function":
                continue
            for name, keep in self.filters.items():
                if keep(node):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
                    matched.add(name)
        unknown = sorted(set(self.filters) - matched)
        if unknown:
            raise ConfigError(f"--keep-float {unknown} match no operation of the model; use module "
                              "names from the sensitivity report, e.g. blocks.3.depthwise.0")
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        return None


class _FloatPreluInputs(Quantizer):
    """Quantizes a convolution's input and weights but not its output where that output goes
    to a PReLU read only by float (``--keep-float``) depthwise convolutions.

    That is the function the onnxruntime QAT export runs there (``quantize.ort_float_prelu``:
    the integer accumulator scaled to float, no rounding before the PReLU), so QAT trains
    what ships instead of a rounding the export then removes. Runs after ``_KeepFloat``, whose
    annotations (no quantization at all) mark the float readers.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        from torchao.testing.pt2e._xnnpack_quantizer_utils import (get_bias_qspec,
                                                                   get_input_act_qspec,
                                                                   get_weight_qspec)

        for conv in model.graph.nodes:
            prelu = _only_user(conv, torch.ops.aten.prelu.default)
            if conv.target not in _CONVS or prelu is None or "quantization_annotation" in conv.meta:
                continue
            if not prelu.users or not all(_is_float_depthwise(n) for n in prelu.users):
                continue
            x, weight, *rest = conv.args
            qspecs = {x: get_input_act_qspec(self.config), weight: get_weight_qspec(self.config)}
            if rest and isinstance(rest[0], torch.fx.Node):
                qspecs[rest[0]] = get_bias_qspec(self.config)
            conv.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=qspecs, output_qspec=None, _annotated=True)
            prelu.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
        return model

    def validate(self, model: torch.fx.GraphModule) -> None:
        return None


_CONVS = (torch.ops.aten.conv2d.default,)


def _only_user(node: torch.fx.Node, target) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].target == target else None


def _is_float_depthwise(node: torch.fx.Node) -> bool:
    """A depthwise convolution ``_KeepFloat`` marked (annotated, nothing quantized): the
    reader ``quantize.ort_float_prelu`` needs; a full conv would rather read INT8."""
    annotation = node.meta.get("quantization_annotation")
    if node.target not in _CONVS or annotation is None or annotation.input_qspec_map \
            or annotation.output_qspec is not None:
        return False
    groups = node.args[6] if len(node.args) > 6 else 1
    value = node.meta.get("val")
    return groups > 1 and value is not None and value.shape[1] == groups
