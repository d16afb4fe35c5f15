"""MaskEdge quantization and export: a student checkpoint to carded ONNX / OpenVINO / TFLite
files, FP32 or INT8 (post-training or QAT), each checked against PyTorch on real faces.

Map (imports torch and the converters only in the modules that need them):

- ``formats``: the one table of export formats; ``exporters/<format>.py``: one module each;
- ``exporter.run_export``: the wrapper (time, parity gate, card, log) every export goes through;
- ``calibration``: the held-out calibration split (real faces, unmasked and masked);
- ``student``: checkpoint loading and the PyTorch reference; ``parity``: the gate;
- ``sensitivity``: per-layer INT8 damage, named when a gate fails; ``cards``: cards, thresholds;
- ``qat``: torchao PT2E QAT; ``pipeline``: the ``export`` / ``quantize`` commands' jobs;
- ``latency``: INT8 vs FP32 timing; ``report``: the retention report.
"""

from quantize.errors import CalibrationError, ExportError, ParityError, QuantizeError
from quantize.formats import FORMATS, Format, get_format, parse_formats

__all__ = ["FORMATS", "CalibrationError", "ExportError", "Format", "ParityError", "QuantizeError",
           "get_format", "parse_formats"]
