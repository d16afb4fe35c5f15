"""Errors of the quantization and export layer, all ``MaskEdgeError``s (exit code 2 in the CLI).

Each message says what went wrong and what to do about it.
"""

from __future__ import annotations

from edge.errors import MaskEdgeError


class QuantizeError(MaskEdgeError):
    """Quantization, QAT or export failed in a way the user can act on."""


class CalibrationError(QuantizeError):
    """The calibration set is empty or too small to calibrate and check an export."""


class ExportError(QuantizeError):
    """A converter (torch.onnx, onnxruntime, OpenVINO/NNCF, litert-torch) refused the model."""


class ParityError(QuantizeError):
    """An exported model disagrees with the PyTorch FP32 model on real faces.

    Attributes:
        parity: the failed ``quantize.parity.ParityResult``.
        sensitivity: the per-layer sensitivity report (Markdown), when one was computed.
    """

    def __init__(self, message: str, parity=None, sensitivity: str | None = None) -> None:
        super().__init__(message)
        self.parity = parity
        self.sensitivity = sensitivity


class RetentionError(QuantizeError):
    """An INT8 model loses more masked-LFW accuracy against its FP32 model than the kit allows.

    Attributes:
        report: the retention report (Markdown file) that shows it.
    """

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report
