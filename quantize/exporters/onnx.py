"""ONNX: FP32 with a dynamic batch (torch dynamo exporter), INT8 by onnxruntime static QDQ.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is used for FP32 as well as for the
QAT model, whose PT2E quantize/dequantize ops only it can translate. Its onnxscript optimiser
folds BatchNorm into the convolutions and keeps each weight's module path as the initializer
name (``blocks.3.depthwise.0.weight``), which is how ``--keep-float`` layers are found.

INT8 PTQ is onnxruntime ``quantize_static`` in QDQ format: per-channel symmetric INT8 weights,
per-tensor asymmetric UINT8 activations (u8s8), ranges from the 99.999th percentile of the
calibration split's activations. Measured choices (``quantize/reports/int8_latency.md``):

- u8s8 rather than s8s8: onnxruntime's CPU provider fuses u8s8 QDQ Conv into QLinearConv
  everywhere, while s8s8 leaves some convolutions in float.
- ``reduce_range`` (7-bit weights): x86 CPUs without VNNI (AVX2, AVX-512F) multiply u8 x s8
  pairs into saturating int16 (``vpmaddubsw``); full-range per-channel weights overflow it and
  cost a MobileFaceNet ~0.1 of cosine to FP32. 7-bit weights cannot overflow and cost little.
- Percentile ranges rather than MinMax: a few outlier activations no longer stretch the scale.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from quantize.context import ONNX_OPSET, ExportContext
from quantize.formats import FORMATS

log = logging.getLogger(__name__)
FORMAT = FORMATS["onnx"]
INPUT, OUTPUT = "input", "embedding"
CALIB_BATCH = 16


def torch_to_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export ``model`` to ONNX (dynamo exporter, opset 18, dynamic batch, one file)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT],
                                output_names=[OUTPUT], dynamic_shapes=({0: batch},),
                                opset_version=ONNX_OPSET, verbose=False)
    program.save(str(path), external_data=False)
    return Path(path)


def export_fp32(ctx: ExportContext) -> Path:
    """The FP32 ONNX model (dynamic batch)."""
    path = torch_to_onnx(ctx.student.model, ctx.example_input(2), ctx.artifact(FORMAT, "fp32"))
    ctx.remember_onnx("fp32", path)
    return path


def export_int8(ctx: ExportContext) -> Path:
    """onnxruntime static QDQ INT8 (u8 activations, 7-bit per-channel weights)."""
    src = ctx.fp32_onnx()
    return quantize_onnx(src, ctx.artifact(FORMAT, "int8-ptq"), ctx.calibration_tensor(),
                         exclude=conv_nodes(src, ctx.keep_float))


def quantize_onnx(src: Path, dst: Path, tensor: np.ndarray, activation: str = "u8",
                  exclude: list[str] | None = None) -> Path:
    """Static QDQ quantization of ``src`` calibrated on ``tensor`` (NCHW float32).

    Args:
        activation: ``u8`` (the export's choice) or ``s8`` (for the latency study).
        exclude: Conv node names left in float.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    act = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[activation]
    quantize_static(str(src), str(dst), _Reader(tensor), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                    reduce_range=True, calibrate_method=CalibrationMethod.Percentile,
                    nodes_to_exclude=exclude or [])
    return Path(dst)


def export_qat(ctx: ExportContext) -> Path:
    """The converted QAT model as QDQ ONNX (its scales learned in training)."""
    path = ctx.artifact(FORMAT, "int8-qat")
    shutil.copyfile(ctx.qat_onnx(), path)
    return path


def conv_nodes(path: Path, layers: tuple[str, ...]) -> list[str]:
    """Names of the Conv nodes whose weights belong to the module paths ``layers``.

    Raises:
        QuantizeError: a layer matches no Conv (the message lists the valid names).
    """
    import onnx

    from quantize.errors import QuantizeError

    if not layers:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    by_layer = {n.input[1].removesuffix(".weight"): n.name for n in graph.node
                if n.op_type == "Conv" and len(n.input) > 1}
    unknown = [layer for layer in layers if layer not in by_layer]
    if unknown:
        raise QuantizeError(f"--keep-float layer(s) {unknown} are not convolutions of this model; "
                            f"valid: {', '.join(sorted(by_layer))}")
    return [by_layer[layer] for layer in layers]


class _Reader(CalibrationDataReader):
    """The calibration tensor in equal batches (read once).

    onnxruntime's percentile calibrator stacks every batch's activations into one array, so
    the batches must have one size: a remainder of fewer than ``CALIB_BATCH`` faces is dropped.
    """

    def __init__(self, tensor: np.ndarray) -> None:
        size = min(CALIB_BATCH, len(tensor))
        self._batches = iter([{INPUT: tensor[i:i + size]}
                              for i in range(0, len(tensor) - size + 1, size)])

    def get_next(self) -> dict | None:
        return next(self._batches, None)
