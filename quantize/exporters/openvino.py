"""OpenVINO IR: FP32 converted from the FP32 ONNX, INT8 by NNCF on the OpenVINO model.

``nncf.quantize`` on the OpenVINO model collects statistics in seconds; NNCF's torch backend
compiles a C++ extension at run time and takes minutes on CPU (``shared/TOOLCHAIN.md``), so
the OpenVINO backend it is. The QAT route converts the QAT model's QDQ ONNX: OpenVINO turns
its FakeQuantize pairs into integer kernels. Weights are saved in FP32 (no FP16 compression)
so that FP32 parity is exact.

Statistics come from every calibration face (NNCF's default stops at 300) and the bias
correction is NNCF's full one, not the fast one: chosen by the INT8 parity gate's own figures
on the held-back faces (never by masked LFW). Measured on the real student (128 held-back faces,
mean / min cosine to FP32): default 0.99674 / 0.98925, all faces 0.99676 / 0.98912, full bias
correction 0.99709 / 0.99130, both 0.99713 / 0.99257; the same graph and latency, 20 s to
quantize instead of 10. The MIXED preset (asymmetric activations) was worse: 0.99549 / 0.95395.

NNCF's overflow fix is on for every layer (its default covers the first only): x86 CPUs
without VNNI saturate u8 x s8 products in int16, and 7-bit weights avoid it (measured: the
cosine to FP32 of a small MobileFaceNet went from 0.89 to 0.97).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.telemetry import disable_openvino_telemetry, import_openvino
from quantize.context import ExportContext
from quantize.exporters.onnx import conv_nodes
from quantize.formats import FORMATS

log = logging.getLogger(__name__)
FORMAT = FORMATS["openvino"]


def export_fp32(ctx: ExportContext) -> Path:
    """The FP32 IR (.xml + .bin), dynamic batch."""
    return _save(_convert(ctx.fp32_onnx()), ctx.artifact(FORMAT, "fp32"))


def export_int8(ctx: ExportContext) -> Path:
    """NNCF post-training INT8 (performance preset) on the OpenVINO model."""
    disable_openvino_telemetry()
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       OverflowFix)

    src = ctx.fp32_onnx()
    tensor = ctx.calibration_tensor()
    dataset = nncf.Dataset([tensor[i:i + 1] for i in range(len(tensor))])
    fp32 = _convert(src)
    ignored = openvino_convs(fp32, conv_nodes(src, ctx.keep_float))
    model = nncf.quantize(fp32, dataset, preset=nncf.QuantizationPreset.PERFORMANCE,
                          subset_size=len(tensor), fast_bias_correction=False,
                          advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
                          ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None)
    return _save(model, ctx.artifact(FORMAT, "int8-ptq"))


def export_qat(ctx: ExportContext) -> Path:
    """The QAT model's QDQ ONNX converted to IR."""
    return _save(_convert(ctx.qat_onnx()), ctx.artifact(FORMAT, "int8-qat"))


def openvino_convs(model, onnx_nodes: list[str]) -> list[str]:
    """The OpenVINO convolutions made from the ONNX Conv nodes ``onnx_nodes``.

    The ONNX frontend turns a Conv with a bias into ``<node>/WithoutBiases`` (the convolution)
    and ``<node>`` (the bias Add). NNCF's ignored scope needs the convolution: given ``<node>``
    it ignores only the Add, and the convolution stays INT8 (measured: three ``--keep-float``
    exports of the real student byte-identical to the export without).

    Raises:
        QuantizeError: a node has no convolution in ``model``.
    """
    from quantize.errors import QuantizeError

    convs = {op.get_friendly_name() for op in model.get_ops()
             if op.get_type_name() in ("Convolution", "GroupConvolution")}
    found = []
    for node in onnx_nodes:
        names = [n for n in (node, f"{node}/WithoutBiases") if n in convs]
        if not names:
            raise QuantizeError(f"--keep-float: ONNX node {node} has no OpenVINO convolution "
                                f"(e.g. {', '.join(sorted(convs)[:3])}); report this with the model")
        found += names
    return found


def _convert(onnx_path: Path):
    ov = import_openvino("the OpenVINO export")
    return ov.convert_model(str(onnx_path))


def _save(model, path: Path) -> Path:
    ov = import_openvino("the OpenVINO export")

    ov.save_model(model, str(path), compress_to_fp16=False)
    return path
