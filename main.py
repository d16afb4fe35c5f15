"""MaskEdge command line: `python main.py --help`.

One sub-app per area. Nothing heavy is imported here: each command imports what it needs
inside its body, so the help and the device-side commands run without torch.
"""

from __future__ import annotations

import sys

import typer

from cli.common import configure, run_app
from cli.models import app as models_app
from cli.access import app as access_app
from cli.bench import register as register_bench
from cli.demo import register as register_demo
from cli.distill import register as register_distill
from cli.eval import register as register_eval
from cli.quantize import register as register_quantize
from cli.verify import register as register_verify

app = typer.Typer(
    help="MaskEdge: masked-face recognition, from a GPU teacher to a device at the door.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
register_verify(app)
register_eval(app)
register_bench(app)
register_demo(app)
register_distill(app)
register_quantize(app)
app.add_typer(access_app, name="access")


@app.callback()
def _global(
    data_root: str = typer.Option(
        None, "--data-root", envvar="MASKEDGE_DATA_ROOT",
        help="Folder with lfw/, models/, masks/ (default: $MASKEDGE_DATA_ROOT).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    configure(data_root, verbose)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    return run_app(app, argv)


if __name__ == "__main__":
    sys.exit(main())
