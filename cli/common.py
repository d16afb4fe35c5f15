"""Shared CLI plumbing: logging set-up, the data-root option, the error-to-exit-code map."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from edge.errors import MaskEdgeError
from edge.paths import DATA_ROOT_ENV

EXIT_USER_ERROR = 2


def configure(data_root: str | None, verbose: bool) -> None:
    """Apply the global options: the data root (exported so every layer sees it) and logging."""
    if data_root:
        os.environ[DATA_ROOT_ENV] = data_root
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


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
