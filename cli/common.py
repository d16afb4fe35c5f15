"""Shared CLI plumbing: logging set-up, the data-root option, the error-to-exit-code map."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from edge.errors import MaskEdgeError
from edge.paths import DATA_ROOT_ENV

EXIT_USER_ERROR = 2

# Import-time notes from the torch stack about GPU-only parts that a CPU install lacks (CUDA
# kernel libraries, triton) and a deprecation inside torchao. They read like failures but
# change nothing the kit runs; --verbose shows them.
IMPORT_NOISE = {
    "torchao": ("Failed to load ",),
    "torchao.kernel.intmm": ("Detected no triton",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
    # onnxruntime's quantize_static advises its pre-processing (shape inference, graph
    # fusions) on the root logger; the kit's exports are already shaped and folded, and parity
    # checks the result.
    "": ("Please consider to run pre-processing", "Please consider pre-processing"),
}
# The kit's own loggers log at INFO; everyone else's INFO (onnxscript's rewrite passes, JAX
# lowering notes from litert-torch, NNCF's graph notes) is converter chatter, hidden unless
# --verbose. Their warnings and errors always show.
KIT_LOGGERS = ("edge", "distill", "quantize", "benchmarks", "cli", "firmware_examples", "__main__")
# Converter chatter that is not Python logging: litert-torch's progress tree (rich), the
# TensorFlow-MLIR converter's C++ INFO lines (absl), and a deprecation raised from inside
# torch.export's pickling. --verbose leaves them on; a user's own setting of either
# variable wins.
QUIET_ENV = {"LITERT_TORCH_SHOW_PROGRESS": "n", "TF_CPP_MIN_LOG_LEVEL": "1"}
QUIET_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


def configure(data_root: str | None, verbose: bool) -> None:
    """Apply the global options: the data root (exported so every layer sees it) and logging."""
    if data_root:
        os.environ[DATA_ROOT_ENV] = data_root
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in KIT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, phrases in IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _DropPhrases)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(_DropPhrases(phrases))
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        for pattern in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)


class _DropPhrases(logging.Filter):
    """Drops records whose message contains one of ``phrases`` (set on the emitting logger:
    torch's loggers have their own handlers and do not reach the root one)."""

    def __init__(self, phrases: tuple[str, ...]) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


def run_app(app: typer.Typer, argv: Sequence[str] | None = None) -> int:
    """Run ``app``; a kit error becomes one line on stderr and exit code 2, no traceback."""
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except MaskEdgeError as err:
        typer.echo(f"error: {err}", err=True)
        return EXIT_USER_ERROR
    except NoArgsIsHelpError as err:  # a bare group: show its help
        err.show()
        return 0
    except ClickException as err:  # bad option or value, missing argument: one line, exit 2
        typer.echo(f"error: {err.format_message()} (see --help)", err=True)
        return EXIT_USER_ERROR
    except typer.Exit as err:
        return err.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


def fail(message: str) -> None:
    """Raise a kit error from CLI code (same exit path as library errors)."""
    raise MaskEdgeError(message)


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)
