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
  onnxruntime's percentile calibrator keeps every activation of what it is fed in memory, so
  it is fed ``CALIB_STRIDE`` batches at a time and merges the histograms (448 faces of the
  PReLU split: 6 GB, against more than 24 GB in one go).
- Bias correction after calibration (``quantize.bias_correction``): each convolution's mean
  output is put back where the FP32 graph has it, level by level, as NNCF does for OpenVINO.
- PReLU students are quantized through their PReLU split (``quantize.prelu_split``): an exact
  ReLU-only twin whose INT8 passes where the PReLU graph's cannot (cosine 0.951 to FP32). The
  twin has twice the multiply-adds, and onnxruntime's u8s8 convolutions are only ~1.4x faster
  per multiply-add than FP32 ones on an AVX2 CPU without VNNI, so this INT8 is slower than the
  branch-free FP32 file (``quantize.ort_prelu``; retention report). The card names the route.
- Except with the depthwise convs float (``--keep-float depthwise``): then each PReLU either
  reads a float conv or feeds only float ones, ``quantize.ort_float_prelu`` takes every
  quantizer before a PReLU out (integer 1x1 convs with float outputs), and the plain graph
  is quantized: no split, faster than FP32 (``int8_source``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from quantize.calibration import bias_faces
from quantize.context import ONNX_OPSET, ExportContext
from quantize.formats import FORMATS

log = logging.getLogger(__name__)
FORMAT = FORMATS["onnx"]
INPUT, OUTPUT = "input", "embedding"
CALIB_BATCH = 16
CALIB_STRIDE = 4  # batches per histogram update: bounds the calibrator's memory


def torch_to_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export ``model`` to ONNX (dynamo exporter, opset 18, dynamic batch, one file)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT],
                                output_names=[OUTPUT], dynamic_shapes=({0: batch},),
                                opset_version=ONNX_OPSET, verbose=False)
    program.save(str(path), external_data=False)
    return Path(path)


def export_fp32(ctx: ExportContext) -> Path:
    """The FP32 ONNX model (dynamic batch), its PReLUs written branch-free for onnxruntime
    (``quantize.ort_prelu``); the plain graph stays the intermediate other exports read."""
    path = ctx.artifact(FORMAT, "fp32")
    write_for_onnxruntime(ctx, ctx.fp32_onnx(), path, "fp32")
    return path


def export_int8(ctx: ExportContext) -> Path:
    """onnxruntime static QDQ INT8 (u8 activations, 7-bit per-channel weights), rewritten as
    the FP32 file is, and with no quantizer before a PReLU that feeds a float depthwise conv. A
    PReLU student goes through its PReLU split unless its ``--keep-float`` layers make that
    rewrite leave no quantizer before any PReLU (``int8_source``)."""
    src, exclude = int8_source(ctx)
    path = quantize_onnx(src, ctx.artifact(FORMAT, "int8-ptq"), ctx.calibration_tensor(),
                         exclude=exclude)
    write_for_onnxruntime(ctx, path, path, "int8-ptq")
    return path


def write_for_onnxruntime(ctx: ExportContext, src: Path, dst: Path, tag: str) -> None:
    """``src`` saved as ``dst`` with onnxruntime's rewrites: PReLUs branch-free
    (``quantize.ort_prelu``) and, in an INT8 graph, no quantizer before a PReLU that feeds a
    float depthwise conv (``quantize.ort_float_prelu``); the card's route names each applied."""
    import onnx

    from quantize import ort_float_prelu, ort_prelu

    model = onnx.load(str(src))
    rewrites = ((ort_prelu.branch_free_prelu, ort_prelu.ROUTE_NOTE),
                (ort_float_prelu.float_prelu_inputs, ort_float_prelu.ROUTE_NOTE))
    applied = [note for rewrite, note in rewrites if rewrite(model)]  # in this order
    for note in applied:
        old = ctx.route_notes.get((FORMAT.name, tag), "")  # an --auto-float rung may repeat
        if note not in old:
            ctx.route_notes[(FORMAT.name, tag)] = f"{old}, {note}" if old else note
    if applied:
        onnx.save(model, str(dst))
    elif src != dst:
        shutil.copyfile(src, dst)


def int8_source(ctx: ExportContext) -> tuple[Path, list[str]]:
    """The FP32 graph to quantize and its node names to leave in float (``--keep-float``).

    A PReLU student is quantized through its split, except where every PReLU reads a float
    conv or feeds only float depthwise convs (``--keep-float depthwise``): there no PReLU
    input needs quantizing once ``quantize.ort_float_prelu`` has rewritten the graph, and the
    plain graph is measured better on every count (real student: parity 0.99751 vs 0.99725,
    0.81 vs 1.6 of FP32's time, 1.9 vs 4.0 MB; report README, eleventh session).
    """
    import onnx

    from quantize.ort_float_prelu import prelu_inputs_stay_float
    from quantize.prelu_split import ROUTE_NOTE, PReLUSplitTwin, needs_split, twin_prefix

    fp32 = ctx.fp32_onnx()
    excluded = conv_nodes(fp32, ctx.keep_float)  # also checks the names against the student
    if not needs_split(ctx.student.model) or prelu_inputs_stay_float(onnx.load(str(fp32)), set(excluded)):
        return fp32, excluded
    twin = PReLUSplitTwin(ctx.student.model).eval()
    src = torch_to_onnx(twin, ctx.example_input(2), ctx.work_dir / "prelu-split.fp32.onnx")
    ctx.route_notes[(FORMAT.name, "int8-ptq")] = ROUTE_NOTE
    return src, nodes_under(src, tuple(twin_prefix(layer) for layer in ctx.keep_float))


def quantize_onnx(src: Path, dst: Path, tensor: np.ndarray, activation: str = "u8",
                  exclude: list[str] | None = None, bias_correction: bool = True) -> Path:
    """Static QDQ quantization of ``src`` calibrated on ``tensor`` (NCHW float32), then bias
    correction (``quantize.bias_correction``) on a subset of the same faces.

    Args:
        activation: ``u8`` (the export's choice) or ``s8`` (for the latency study).
        exclude: Conv node names left in float.
        bias_correction: off only to measure what it brings.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    act = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[activation]
    reader = _Reader(tensor)
    target = Path(dst).with_suffix(".uncorrected.onnx") if bias_correction else Path(dst)
    log.info("onnx int8: activation ranges from the 99.999th percentile of %d faces' activations",
             len(tensor))
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # its calibration prints
        quantize_static(str(src), str(target), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=act, weight_type=QuantType.QInt8,
                        reduce_range=True, calibrate_method=CalibrationMethod.Percentile,
                        nodes_to_exclude=exclude or [],
                        extra_options={"CalibStridedMinMax": _stride(len(reader))})
    log.debug("onnxruntime quantize_static printed:\n%s", printed.getvalue().strip())
    if bias_correction:
        from quantize.bias_correction import correct_biases

        correct_biases(target, Path(src), bias_faces(tensor), Path(dst), INPUT)
        target.unlink()
    return Path(dst)


def export_qat(ctx: ExportContext) -> Path:
    """The converted QAT model as QDQ ONNX (its scales learned in training), rewritten for
    onnxruntime: weights stored as INT8, activations u8, so that its convolutions fuse into
    ``QLinearConv`` (``quantize.ort_qdq``); PReLUs branch-free (``quantize.ort_prelu``); no
    quantizer before a PReLU that feeds a float depthwise conv (``quantize.ort_float_prelu``)."""
    import onnx

    from quantize import ort_float_prelu, ort_prelu, ort_qdq

    path = ctx.artifact(FORMAT, "int8-qat")
    model = onnx.load(str(ctx.qat_onnx()))
    notes = []
    if ort_qdq.fold_weight_quantization(model) + ort_qdq.activations_to_u8(model):
        notes.append(ort_qdq.ROUTE_NOTE)
    if ort_prelu.branch_free_prelu(model):
        notes.append(ort_prelu.ROUTE_NOTE)
    if ort_float_prelu.float_prelu_inputs(model):  # after the u8 move: it reads u8 activations
        notes.append(ort_float_prelu.ROUTE_NOTE)
    if notes:
        ctx.route_notes[(FORMAT.name, "int8-qat")] = ", ".join(notes)
    onnx.save(model, str(path))
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


def nodes_under(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    """Conv nodes whose weights lie under the module ``prefixes``, and the Adds that sum their
    outputs (a PReLU split's halves): what must stay float to keep those layers float."""
    import onnx

    if not prefixes:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    convs = {n.output[0]: n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1
             and n.input[1].startswith(prefixes)}
    adds = [n.name for n in graph.node if n.op_type == "Add" and any(i in convs for i in n.input)]
    return list(convs.values()) + adds


def _stride(batches: int) -> int:
    """The largest divisor of ``batches`` up to ``CALIB_STRIDE`` (onnxruntime needs a divisor)."""
    return max(d for d in range(1, CALIB_STRIDE + 1) if batches % d == 0)


class _Reader(CalibrationDataReader):
    """The calibration tensor in equal batches, read in ranges of batches.

    onnxruntime's percentile calibrator stacks every batch's activations into one array, so
    the batches must have one size: a remainder of fewer than ``CALIB_BATCH`` faces is dropped.
    """

    def __init__(self, tensor: np.ndarray) -> None:
        size = min(CALIB_BATCH, len(tensor))
        self._all = [{INPUT: tensor[i:i + size]} for i in range(0, len(tensor) - size + 1, size)]
        self.set_range(0, len(self._all))

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read batches ``start_index`` to ``end_index`` next (onnxruntime's strided calibration)."""
        self._batches = iter(self._all[start_index:end_index])

    def get_next(self) -> dict | None:
        return next(self._batches, None)
