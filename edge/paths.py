"""Where the kit finds real data (the data root) and keeps derived files (the cache)."""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import DataRootError

DATA_ROOT_ENV = "MASKEDGE_DATA_ROOT"
CACHE_ENV = "MASKEDGE_CACHE"


def data_root(override: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``override`` if given, else ``$MASKEDGE_DATA_ROOT``.

    Raises:
        DataRootError: neither is set, or the folder does not exist.
    """
    value = override or os.environ.get(DATA_ROOT_ENV)
    if not value:
        raise DataRootError(
            f"no data root set: export {DATA_ROOT_ENV}=/path/to/data (the folder holding "
            "lfw/, models/, masks/) or pass --data-root"
        )
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataRootError(
            f"data root {root} does not exist: point {DATA_ROOT_ENV} or --data-root at the "
            "folder holding lfw/, models/, masks/"
        )
    return root


def data_file(relative: str, override: str | os.PathLike | None = None) -> Path:
    """Return ``data_root()/relative``, raising a clear error when it is missing."""
    path = data_root(override) / relative
    if not path.exists():
        raise DataRootError(
            f"{relative} not found under the data root {path.parent.parent}: check "
            f"{DATA_ROOT_ENV} (expected file {path})"
        )
    return path


def cache_dir(sub: str = "") -> Path:
    """Return (and create) the cache folder, ``$MASKEDGE_CACHE`` or ``~/.cache/maskedge``."""
    base = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "maskedge")).expanduser()
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path


def packaged_file(spec: str) -> Path | None:
    """Path of ``relative/path`` inside the installed ``package`` (not imported), or None."""
    import importlib.util

    package, relative = spec.split(":", 1)
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None
