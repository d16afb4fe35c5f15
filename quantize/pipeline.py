"""The two jobs behind ``main.py export`` and ``main.py quantize``.

``export_models``: FP32 exports of a checkpoint in each format. ``quantize_models``: the same
FP32 exports (the side-by-side reference) plus INT8 by post-training quantization or QAT.
Every file goes through ``quantize.exporter.run_export`` (parity gate, card). A failing format
does not stop the others; at the end a ``QuantizeError`` lists every failure, so one run shows
all that is wrong. ``summary.json`` in the output folder records the resolved settings and
each artifact's figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge.errors import ConfigError
from quantize.calibration import CalibrationConfig, load_calibration
from quantize.auto_float import export_with_auto_float
from quantize.context import ExportContext
from quantize.errors import QuantizeError
from quantize.exporter import ExportResult, run_export
from quantize.formats import METHODS, parse_formats
from quantize.qat import QATConfig
from quantize.student import expand_layer_names, load_student

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """One export or quantization run.

    Attributes:
        checkpoint: the student checkpoint.
        formats: comma-separated format names (``quantize.formats.FORMATS``).
        method: ``None`` for FP32 only, else ``ptq`` or ``qat``.
        out: output folder (default: ``<checkpoint folder>/export``).
        calibration: the calibration split.
        qat: QAT settings (method ``qat``).
        keep_float: module names left in float by INT8 exports.
        threads: torch intra-op threads (None: torch's default). On a busy machine fewer
            threads than cores avoids OpenMP threads spinning against each other.
        equalize: rescale every conv -> PReLU/ReLU -> depthwise pair to even per-channel
            activation ranges first (``quantize.equalize``; off by default: on the PReLU
            student it did not help end to end, see its report).
        auto_float: a PTQ INT8 export that fails its parity gate is exported again with more
            layers in float (``quantize.auto_float``).
    """

    checkpoint: Path
    formats: str = "onnx,openvino,tflite"
    method: str | None = None
    out: Path | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    keep_float: tuple[str, ...] = ()
    threads: int | None = None
    equalize: bool = False
    auto_float: bool = False

    def __post_init__(self) -> None:
        parse_formats(self.formats)  # raises on unknown names, listing the valid ones
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.method is not None and self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.checkpoint).parent / "export"


@dataclass
class RunSummary:
    """What a run wrote, and what failed."""

    out_dir: Path
    results: list[ExportResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    qat: str | None = None
    sensitivity: str | None = None

    def lines(self) -> list[str]:
        """One line per artifact, for the CLI."""
        out = [f"{r.path.name:40s} {r.parity.mean:.5f} mean cos, {r.parity.min:.5f} min, "
               f"{r.to_dict()['size_bytes'] / 1e6:6.2f} MB, {r.seconds:5.1f} s" for r in self.results]
        return out + [f"FAILED: {f.splitlines()[0]}" for f in self.failures]


def export_models(config: RunConfig, progress: bool = True) -> RunSummary:
    """FP32 exports of ``config.checkpoint`` in every format (see ``quantize_models``)."""
    return _run(config, ("fp32",), progress)


def quantize_models(config: RunConfig, progress: bool = True) -> RunSummary:
    """FP32 and INT8 (``config.method``) exports in every format.

    Raises:
        ConfigError: no method. QuantizeError: one or more exports failed (all are listed).
        ModelFileError / CalibrationError / DataRootError: bad checkpoint or calibration data.
    """
    if config.method is None:
        raise ConfigError(f"quantize needs a method; valid methods: {', '.join(METHODS)}")
    return _run(config, ("fp32", f"int8-{config.method}"), progress)


def _run(config: RunConfig, tags: tuple[str, ...], progress: bool) -> RunSummary:
    formats = parse_formats(config.formats)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    student = load_student(config.checkpoint)
    calibration = load_calibration(config.calibration, progress=progress)
    if config.equalize:
        from quantize.equalize import equalize

        student = equalize(student, calibration.calibration_faces())[0]
    keep_float = expand_layer_names(student.model, config.keep_float)
    ctx = ExportContext(student, calibration, config.out_dir, keep_float=keep_float)
    summary = RunSummary(ctx.out_dir)
    export = export_with_auto_float if config.auto_float else run_export
    if "int8-qat" in tags:
        from quantize.qat import run_qat

        float_prelu_inputs = all(fmt.qat_float_prelu_inputs for fmt in formats)
        result = run_qat(student, calibration, config.qat, keep_float, progress=progress,
                         float_prelu_inputs=float_prelu_inputs)
        ctx.qat_model, summary.qat = result.model, result.summary()
    weights = _fingerprint(student.model)
    for fmt in formats:
        for tag in tags:
            try:
                summary.results.append(export(ctx, fmt, tag))
            except QuantizeError as err:
                summary.failures.append(str(err))
                summary.sensitivity = getattr(err, "sensitivity", None) or summary.sensitivity
            # Every later export and parity check reads the student: one that changed it (as
            # the LiteRT bias correction once did, through tensors torch.export shares) is a bug.
            if _fingerprint(student.model) != weights:
                raise QuantizeError(f"internal error: the {fmt.name} {tag} export changed the "
                                    "student's weights; later exports would be wrong. Please report it")
    ctx.cleanup()
    _write_summary(config, summary)
    if summary.failures:
        raise _combined(summary)
    return summary


def _fingerprint(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _combined(summary: RunSummary) -> QuantizeError:
    done = ", ".join(r.path.name for r in summary.results) or "none"
    message = (f"{len(summary.failures)} export(s) failed (written and checked: {done}; see "
               f"{summary.out_dir / 'summary.json'}):\n\n" + "\n\n".join(summary.failures))
    return QuantizeError(message + (f"\n\n{summary.sensitivity}" if summary.sensitivity else ""))


def _write_summary(config: RunConfig, summary: RunSummary) -> None:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    record = {"settings": settings, "out": str(summary.out_dir), "qat": summary.qat,
              "artifacts": [r.to_dict() for r in summary.results], "failures": summary.failures}
    (summary.out_dir / "summary.json").write_text(json.dumps(record, indent=1, default=str))
