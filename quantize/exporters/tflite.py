"""TFLite (LiteRT): FP32 and full-integer INT8 through litert-torch, NHWC input, batch 1.

The graph takes NHWC input (``litert_torch.to_channel_last_io``), the layout TFLite kernels
use, so no transpose runs at the input. litert-torch cannot lower a dynamic batch through
MobileFaceNet's flatten, so the graph has a fixed batch of 1 and the card says so (the edge
runtime feeds faces one by one).

INT8 PTQ is torchao PT2E with the XNNPACK quantizer (symmetric INT8, per-channel weights,
histogram-observed activations), converted with ``fold_quantize=False`` and lowered by
``litert_torch.convert(quant_config=QuantConfig(<litert static quantizer>))`` into a
full-integer model (int8 in and out; the edge runtime quantizes the input with the graph's
own scale). Before lowering, the converted graph's biases are corrected so each convolution's
mean output matches FP32 (``quantize.pt2e_bias``). Unlike onnxruntime, a PReLU student is not
quantized through its PReLU split here: on the real student, every depthwise conv and
``conv_last`` float, the PReLU graph reached 0.99700 and the split 0.99552, with twice the MACs.
The QAT route lowers the converted QAT model the same way. The XNNPACK quantizer
rather than litert-torch's own ``PT2EQuantizer``: one quantizer for PTQ and QAT (litert-torch's
fails in QAT mode, ``shared/TOOLCHAIN.md``), ``quantize.pt2e`` can leave ``--keep-float``
modules in float around it, and it finds residual adds by op rather than by source function
(litert-torch's leaves all 12 of MobileFaceNet's adds float unless the export is strict).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from quantize.context import ExportContext
from quantize.formats import FORMATS

log = logging.getLogger(__name__)
FORMAT = FORMATS["tflite"]
CALIB_BATCH = 32


def export_fp32(ctx: ExportContext) -> Path:
    """The FP32 .tflite (NHWC, batch 1)."""
    return _lower(ctx.student.model, ctx, ctx.artifact(FORMAT, "fp32"), quant_config=None)


def export_int8(ctx: ExportContext) -> Path:
    """Full-integer INT8 by PT2E post-training quantization, calibrated on the calibration split,
    then bias correction (``quantize.pt2e_bias``)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from quantize.calibration import bias_faces
    from quantize.pt2e import xnnpack_quantizer
    from quantize.pt2e_bias import correct_pt2e_biases

    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(ctx.student.model, (ctx.example_input(2),),
                                dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(graph, xnnpack_quantizer(ctx.keep_float))
    tensor = torch.from_numpy(ctx.calibration_tensor())
    with torch.no_grad():
        for start in range(0, len(tensor), CALIB_BATCH):
            prepared(tensor[start:start + CALIB_BATCH])
    converted = allow_exported_model_train_eval(convert_pt2e(prepared, fold_quantize=False))
    faces = torch.from_numpy(bias_faces(ctx.calibration_tensor()))
    log.info("bias correction of %d convolutions", correct_pt2e_biases(converted, faces))
    return _lower(converted, ctx, ctx.artifact(FORMAT, "int8-ptq"), quant_config=_static_config())


def export_qat(ctx: ExportContext) -> Path:
    """Full-integer INT8 from the converted QAT model."""
    from quantize.errors import QuantizeError

    if ctx.qat_model is None:
        raise QuantizeError("no QAT model in this run: run quantize.qat.run_qat first")
    return _lower(ctx.qat_model, ctx, ctx.artifact(FORMAT, "int8-qat"), quant_config=_static_config())


def _static_config():
    # Tells litert-torch the graph holds static (calibrated) q/dq pairs to lower to integer ops.
    from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                      get_symmetric_quantization_config)
    from litert_torch.quantize.quant_config import QuantConfig

    return QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)))


def _lower(model: torch.nn.Module, ctx: ExportContext, path: Path, quant_config) -> Path:
    return _lower_nhwc(model, ctx.example_input(1), path, quant_config)


def _lower_nhwc(model: torch.nn.Module, sample: torch.Tensor, path: Path, quant_config) -> Path:
    """Lower ``model`` (NCHW) to a .tflite taking NHWC input; ``sample``: one NCHW input."""
    import litert_torch

    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    edge_model = litert_torch.convert(nhwc, (sample.permute(0, 2, 3, 1).contiguous(),),
                                      quant_config=quant_config)
    edge_model.export(str(path))
    return path
