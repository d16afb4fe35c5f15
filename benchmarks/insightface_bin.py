"""InsightFace validation ``.bin`` sets (a pickle of JPEG bytes and is_same flags), read safely."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from benchmarks.datasets import MemorySource, Pair
from edge.errors import DatasetError

try:  # numpy 2 renamed numpy.core to numpy._core; .bin pickles name either one
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _multiarray


class _BinUnpickler(pickle.Unpickler):
    """Unpickler that builds only bytes, bools, lists, tuples and numpy arrays.

    A ``.bin`` is a pickle, and a pickle may call any function it names; these are the only
    names that plain (JPEG bytes, is_same) data needs, so nothing else can run.
    """

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytearray"),
                ("builtins", "bytes"), ("_codecs", "encode")}  # Python 3 bytes in protocol 2
    _ALLOWED |= {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for n in ("_reconstruct", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a .bin file")
        if module.endswith(".multiarray"):
            return getattr(_multiarray, name)
        return super().find_class(module, name)


def _bin_payload(obj, path: Path) -> tuple[list[bytes], np.ndarray]:
    """Check the unpickled object is (images, is_same) and normalise both."""
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise DatasetError(f"{path}: expected a pickle of (list of JPEG bytes, list of is_same)")
    raw_images, raw_same = obj
    if not isinstance(raw_images, (list, tuple)):
        raise DatasetError(f"{path}: expected a list of images, got {type(raw_images).__name__}")
    images = []
    for i, item in enumerate(raw_images):
        if isinstance(item, np.ndarray) and item.dtype == np.uint8:
            item = item.tobytes()
        if not isinstance(item, (bytes, bytearray)):
            raise DatasetError(f"{path}: image {i} is {type(item).__name__}, expected bytes")
        images.append(bytes(item))
    same = np.asarray(raw_same).reshape(-1)
    if same.dtype != np.bool_ and not (same.dtype.kind in "iu" and np.isin(same, (0, 1)).all()):
        raise DatasetError(f"{path}: is_same must be booleans, got dtype {same.dtype}")
    if len(images) != 2 * same.size:
        raise DatasetError(f"{path}: {len(images)} images for {same.size} pairs, expected "
                           f"{2 * same.size} (pair i is images 2i and 2i+1)")
    return images, same.astype(bool)


def load_insightface_bin(path: str | os.PathLike,
                         n_folds: int = 10) -> tuple[MemorySource, list[Pair]]:
    """Read an InsightFace validation ``.bin`` (pickle of JPEG bytes and is_same bools), safely.

    Pair ``i`` compares images ``2i`` and ``2i+1``; keys are ``"00000.jpg"``, ``"00001.jpg"``...
    Folds are ``n_folds`` consecutive equal blocks, as insightface evaluates them.

    Args:
        path: the ``.bin`` file.
        n_folds: number of folds.

    Returns:
        ``(source, pairs)``.

    Raises:
        DatasetError: missing file, a pickle naming anything but bytes/bools/numpy arrays, or
            a payload that is not (images, is_same) with two images per pair.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f".bin file {path} not found: check the path")
    try:
        with path.open("rb") as handle:
            obj = _BinUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"cannot read {path} as an InsightFace .bin: {exc}") from exc
    images, same = _bin_payload(obj, path)
    keys = [f"{i:05d}.jpg" for i in range(len(images))]
    pairs = [Pair(keys[2 * i], keys[2 * i + 1], bool(s), i * n_folds // same.size, i + 1)
             for i, s in enumerate(same)]
    return MemorySource(str(path), dict(zip(keys, images))), pairs
