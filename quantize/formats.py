"""The one table of export formats: name, file suffix, edge runtime, exporter module, INT8 route.

Each row names the module that exports that format (``quantize/exporters/<name>.py``); the
module is imported only when the format is used, so asking for ONNX never imports litert-torch.
Every exporter module provides the same three functions, all taking a
``quantize.context.ExportContext`` and returning the written model file:

- ``export_fp32(ctx)``: the FP32 model;
- ``export_int8(ctx)``: post-training INT8, calibrated on ``ctx.calibration_tensor()``;
- ``export_qat(ctx)``: INT8 from the converted QAT model ``ctx.qat_model``.

``quantize.exporter.run_export`` wraps them: timing, parity gate, model card, logging.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from edge.errors import ConfigError

PRECISIONS = ("fp32", "int8")
METHODS = ("ptq", "qat")


@dataclass(frozen=True)
class Format:
    """One export format.

    Attributes:
        name: the ``--formats`` value.
        suffix: the model file's suffix (picks the edge runtime).
        runtime: the ``edge.runtimes`` backend that runs it.
        module: the exporter module.
        int8: whether INT8 export is supported.
        int8_route: how post-training INT8 is made (written into the card's provenance).
        qat_route: how the converted QAT model becomes this format.
        layout: input layout of the exported graph ("nchw" or "nhwc").
        batch: fixed graph batch, or None for a dynamic batch.
        qat_float_prelu_inputs: whether QAT may leave the output of a convolution float where
            its PReLU feeds only float depthwise convs (``quantize.pt2e._FloatPreluInputs``):
            the runtime then runs that convolution on integer inputs with a float result.
            Not for LiteRT: its full-integer lowering makes such a convolution a float one.
    """

    name: str
    suffix: str
    runtime: str
    module: str
    int8: bool
    int8_route: str
    qat_route: str
    layout: str = "nchw"
    batch: int | None = None
    qat_float_prelu_inputs: bool = True

    def exporter(self) -> ModuleType:
        """Import and return the exporter module (heavy imports happen here)."""
        return importlib.import_module(self.module)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", "onnxruntime", "quantize.exporters.onnx", True,
               "onnxruntime static QDQ: per-tensor u8 activations (percentile ranges), "
               "per-channel 7-bit s8 weights (u8s8 fuses every Conv into QLinearConv), "
               "bias correction against the FP32 graph",
               "QDQ ONNX by the dynamo exporter"),
        Format("openvino", ".xml", "openvino", "quantize.exporters.openvino", True,
               "nncf.quantize on the OpenVINO model (performance preset, full bias correction, "
               "overflow fix)",
               "openvino.convert_model of the QDQ ONNX"),
        Format("tflite", ".tflite", "tflite", "quantize.exporters.tflite", True,
               "torchao PT2E, XNNPACK quantizer (symmetric, per-channel weights), litert-torch "
               "full-integer lowering",
               "litert-torch full-integer lowering", layout="nhwc", batch=1,
               qat_float_prelu_inputs=False),
    )
}


def get_format(name: str) -> Format:
    """Return the format called ``name``.

    Raises:
        ConfigError: unknown name; the message lists the valid ones.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown export format {name!r}; valid formats: "
                          f"{', '.join(FORMATS)}") from None


def parse_formats(value: str) -> list[Format]:
    """Parse a comma-separated ``--formats`` value into formats (duplicates dropped, order kept).

    Raises:
        ConfigError: an empty list or an unknown name (all valid names are listed).
    """
    names = list(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    if not names:
        raise ConfigError(f"no export format given; valid formats: {', '.join(FORMATS)}")
    return [get_format(n) for n in names]
