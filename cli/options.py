"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum

import typer


class Runtime(str, Enum):
    """Inference runtimes a carded model can run on."""

    onnxruntime = "onnxruntime"
    openvino = "openvino"
    tflite = "tflite"
    tensorrt = "tensorrt"


MODEL = typer.Option("sface", "--model", "-m", help="Zoo name (see `models list`) or model file.")
RUNTIME = typer.Option(None, "--runtime", "-r", help="Runtime (default: from the file suffix).")
THREADS = typer.Option(None, "--threads", "-t", min=1, help="Inference threads (default: runtime's).")
FAR = typer.Option(1e-3, "--far", min=1e-7, max=0.5, help="Target false-accept rate for the decision.")
