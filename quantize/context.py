"""What every exporter needs: the student, the calibration split, the output folder, shared
intermediates (the FP32 ONNX, the QAT model and its ONNX) made once per run."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from quantize.calibration import CalibrationSet
from quantize.formats import Format
from quantize.parity import GATES, ParityGate
from quantize.student import Student

log = logging.getLogger(__name__)
ONNX_OPSET = 18


@dataclass
class ExportContext:
    """One export run.

    Attributes:
        student: the FP32 PyTorch model and its input convention.
        calibration: real faces for INT8 ranges, parity checks and thresholds.
        out_dir: where model files and cards are written.
        keep_float: module names (e.g. ``blocks.3.depthwise.0``) left in float by INT8 exports.
        qat_model: the converted PT2E QAT model (``quantize.qat.run_qat``), for ``export_qat``.
        gates: parity gate per precision (``quantize.parity.GATES``; tests of tiny students,
            which cannot reach the INT8 gate, pass looser ones explicitly).
        route_notes: per (format name, tag), how this run's export departed from the format's
            usual route (written by the exporter, appended to the card's provenance).
    """

    student: Student
    calibration: CalibrationSet
    out_dir: Path
    keep_float: tuple[str, ...] = ()
    qat_model: torch.nn.Module | None = None
    gates: dict[str, ParityGate] = field(default_factory=lambda: dict(GATES))
    route_notes: dict[tuple[str, str], str] = field(default_factory=dict)
    _onnx: dict[str, Path] = field(default_factory=dict)
    _sensitivity: list | None = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def work_dir(self) -> Path:
        """Scratch folder for intermediates (removed by ``cleanup``)."""
        path = self.out_dir / ".work"
        path.mkdir(exist_ok=True)
        return path

    def artifact(self, fmt: Format, tag: str) -> Path:
        """The model file for ``fmt`` and ``tag`` (``fp32``, ``int8-ptq``, ``int8-qat``)."""
        return self.out_dir / f"{self.student.name}.{tag}{fmt.suffix}"

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A real-face input tensor in the student's convention (NCHW)."""
        return self.student.to_tensor(self.calibration.calibration_faces()[:batch])

    def calibration_tensor(self) -> np.ndarray:
        """float32 NCHW tensor of every calibration face (half of them masked)."""
        return self.student.to_tensor(self.calibration.calibration_faces()).numpy()

    def fp32_onnx(self) -> Path:
        """The FP32 ONNX model (dynamic batch), exported once per run."""
        if "fp32" not in self._onnx:
            from quantize.exporters.onnx import torch_to_onnx

            self._onnx["fp32"] = torch_to_onnx(self.student.model, self.example_input(2),
                                               self.work_dir / "fp32.onnx")
        return self._onnx["fp32"]

    def qat_onnx(self) -> Path:
        """The converted QAT model as QDQ ONNX (dynamo exporter), exported once per run."""
        if "qat" not in self._onnx:
            from quantize.exporters.onnx import torch_to_onnx
            from quantize.errors import QuantizeError

            if self.qat_model is None:
                raise QuantizeError("no QAT model in this run: run quantize.qat.run_qat first "
                                    "(main.py quantize --method qat)")
            self._onnx["qat"] = torch_to_onnx(self.qat_model, self.example_input(2),
                                              self.work_dir / "int8-qat.onnx")
        return self._onnx["qat"]

    def sensitivity(self) -> list:
        """Per-layer INT8 sensitivity of the student (``quantize.sensitivity``), computed once."""
        if self._sensitivity is None:
            from quantize.sensitivity import layer_sensitivity

            self._sensitivity = layer_sensitivity(self.student, self.calibration)
        return self._sensitivity

    def remember_onnx(self, kind: str, path: Path) -> None:
        """Reuse an ONNX file written as an artifact (``kind``: fp32 or qat) as the intermediate."""
        self._onnx[kind] = Path(path)

    def cleanup(self) -> None:
        """Remove the scratch folder."""
        shutil.rmtree(self.out_dir / ".work", ignore_errors=True)
