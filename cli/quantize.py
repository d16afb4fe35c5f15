"""`main.py export` (FP32) and `main.py quantize` (FP32 + INT8 by PTQ or QAT) of a student
checkpoint to ONNX / OpenVINO / TFLite, each file checked against PyTorch and carded.

Wire it into main.py with ``register(app)``. torch and the converters are imported inside the
command bodies, so ``main.py --help`` stays torch-free.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

FORMATS_HELP = "Comma-separated formats: onnx, openvino, tflite."
CHECKPOINT = typer.Option(..., "--checkpoint", "-c", exists=True, dir_okay=False,
                          help="Student checkpoint, e.g. runs/distill/<run>/last.pt.")
OUT = typer.Option(None, "--out", "-o", help="Output folder (default: <checkpoint folder>/export).")
CALIB = typer.Option(512, "--calib", help="Faces in the calibration split (parity, INT8 ranges, thresholds).")
THREADS = typer.Option(None, "--threads", "-t", min=1,
                       help="torch threads for export/QAT (default: torch's; 1 on a busy machine).")
CALIB_SOURCE = typer.Option("lfw-holdout+utkface", "--calib-source",
                            help="lfw-holdout (grey LFW images outside the 6,000 pairs), utkface "
                                 "(colour), a folder / tgz of face photos, or several joined by '+'.")


class Method(str, Enum):
    """How INT8 is made."""

    ptq = "ptq"
    qat = "qat"


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``quantize`` commands to the top-level app."""
    app.command("export")(export)
    app.command("quantize")(quantize)


def export(
    checkpoint: Path = CHECKPOINT,
    formats: str = typer.Option("onnx,openvino,tflite", "--formats", "-f", help=FORMATS_HELP),
    out: Path = OUT,
    calib: int = CALIB,
    calib_source: str = CALIB_SOURCE,
    threads: int = THREADS,
) -> None:
    """Export a student to FP32 ONNX / OpenVINO / TFLite, each checked against PyTorch and carded."""
    from quantize.pipeline import RunConfig, export_models

    config = RunConfig(checkpoint, _formats(formats), None, out, _calibration(calib, calib_source),
                       threads=threads)
    _print(export_models(config))


def quantize(
    checkpoint: Path = CHECKPOINT,
    method: Method = typer.Option(Method.ptq, "--method", "-m", help="ptq (calibration only) or qat."),
    formats: str = typer.Option("onnx,openvino,tflite", "--formats", "-f", help=FORMATS_HELP),
    out: Path = OUT,
    calib: int = CALIB,
    calib_source: str = CALIB_SOURCE,
    steps: int = typer.Option(300, "--steps", min=1, help="QAT optimiser steps."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="QAT faces per step."),
    lr: float = typer.Option(1e-4, "--lr", help="QAT learning rate (Adam, cosine decay)."),
    freeze_bn: int = typer.Option(0, "--freeze-bn-step", min=0,
                                  help="QAT step at which BatchNorm statistics freeze (0: folded "
                                       "from the start)."),
    freeze_observers: int = typer.Option(None, "--freeze-observer-step", min=0,
                                         help="QAT step at which INT8 ranges freeze (default 3/4 of --steps)."),
    qat_faces: int = typer.Option(0, "--qat-faces", min=0,
                                  help="QAT trains on N UTKFace faces (the students' training set, "
                                       "parity-check faces left out); 0: on the calibration split."),
    keep_float: str = typer.Option("", "--keep-float",
                                   help="Comma-separated conv module names INT8 leaves in float "
                                        "(the parity gate's sensitivity report names them); "
                                        "'depthwise' names every depthwise conv."),
    auto_float: bool = typer.Option(False, "--auto-float",
                                    help="A PTQ INT8 export that fails the parity gate is exported "
                                         "again with more layers float: the sensitivity report's 3 "
                                         "worst, then every depthwise conv too."),
    report: bool = typer.Option(False, "--report", help="Then write the retention report (masked LFW)."),
    equalize: bool = typer.Option(False, "--equalize",
                                  help="Even out per-channel activation ranges before INT8 "
                                       "(conv -> PReLU/ReLU -> depthwise pairs; FP32 unchanged)."),
    threads: int = THREADS,
) -> None:
    """Export FP32 and INT8 (PTQ or QAT) models; INT8 must pass the parity gate or the command fails."""
    from quantize.pipeline import RunConfig, quantize_models
    from quantize.qat import QATConfig

    qat = QATConfig(steps=steps, batch_size=batch_size, lr=lr, freeze_bn_step=freeze_bn,
                    freeze_observer_step=freeze_observers, faces=qat_faces)
    layers = tuple(v.strip() for v in keep_float.split(",") if v.strip())
    config = RunConfig(checkpoint, _formats(formats), method.value, out,
                       _calibration(calib, calib_source), qat, layers, threads, equalize, auto_float)
    summary = quantize_models(config)
    _print(summary)
    if report:
        from quantize.report import retention_report

        markdown, plot = retention_report(summary.out_dir, checkpoint=checkpoint)
        typer.echo(f"retention report: {markdown}" + (f", plot: {plot}" if plot else ""))


def _formats(value: str) -> str:
    from edge.errors import ConfigError
    from quantize.formats import parse_formats

    try:
        return ",".join(f.name for f in parse_formats(value))
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--formats") from None


def _calibration(size: int, source: str):
    from quantize.calibration import CalibrationConfig

    return CalibrationConfig(source=source, size=size)


def _print(summary) -> None:
    if summary.qat:
        typer.echo(summary.qat)
    for line in summary.lines():
        typer.echo(line)
    typer.echo(f"cards and summary.json in {summary.out_dir}")
