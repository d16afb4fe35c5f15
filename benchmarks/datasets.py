"""Readers for verification data: LFW (tgz or folder), pairs lists, InsightFace ``.bin`` files.

No detection or alignment here. A source hands out JPEG bytes or decoded BGR arrays by key,
the image's path relative to the data set's root (``"Abel_Pacheco/Abel_Pacheco_0001.jpg"``),
and a pairs list (:class:`Pair` rows) says which keys to compare, whether they show the same
person and in which fold. Every problem a user can fix is a ``DatasetError`` naming the file.
"""

from __future__ import annotations

import csv
import logging
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from edge.errors import DatasetError, ImageError
from edge.paths import data_file

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar")
LFW_TGZ = "lfw/lfw-a-gray.tgz"
LFW_PAIRS = "lfw/pairs.txt"
LFW_SAME_FORMAT = "'name n1 n2' (same person, 3 fields)"
LFW_DIFF_FORMAT = "'name1 n1 name2 n2' (different people, 4 fields)"
CSV_FORMAT = "'path_a,path_b,is_same[,fold]' (is_same: 1/0/true/false; tab-separated also works)"
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


class Pair(NamedTuple):
    """One verification pair. ``line`` is its 1-based line in the pairs file (pair number for
    a ``.bin``), kept so that later errors can point at it."""

    path_a: str
    path_b: str
    is_same: bool
    fold: int
    line: int


def pair_labels(pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(is_same, folds)`` arrays for :func:`edge.metrics.ten_fold_accuracy`."""
    return (np.array([p.is_same for p in pairs], dtype=bool),
            np.array([p.fold for p in pairs], dtype=np.int64))


def unique_images(pairs: list[Pair]) -> list[str]:
    """Sorted distinct image keys used by ``pairs`` (7,701 for LFW View 2)."""
    return sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})


def decode_image(data: bytes, key: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes into a BGR uint8 array (grayscale JPEGs become 3 channels).

    Raises:
        ImageError: the bytes are empty, truncated or not a decodable image (names ``key``).
    """
    from edge.image import read_image  # OpenCV only when decoding: parsing pairs stays light

    try:
        return read_image(bytes(data))
    except ImageError as err:
        raise ImageError(f"image {key!r}: {err}") from None


class ImageSource:
    """Images by key. Subclasses fill ``self._keys`` and implement ``_read``."""

    def __init__(self, name: str, keys: Iterable[str]):
        self.name = name
        self._keys = set(keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[str]:
        """All image keys, sorted."""
        return sorted(self._keys)

    def _read(self, key: str) -> bytes:
        raise NotImplementedError

    def _require(self, key: str) -> None:
        if key not in self._keys:
            raise DatasetError(f"image {key!r} is not in {self.name}")

    def read_bytes(self, key: str) -> bytes:
        """Encoded bytes of one image; DatasetError if the key is not in this source."""
        self._require(key)
        return self._read(key)

    def read_image(self, key: str) -> np.ndarray:
        """Decoded BGR uint8 image (H, W, 3); DatasetError / ImageError as ``read_bytes`` /
        :func:`decode_image`."""
        return decode_image(self.read_bytes(key), key)

    def preload(self, keys: Iterable[str]) -> None:
        """Make later reads of ``keys`` cheap (a no-op where random access already is).

        Raises:
            DatasetError: a key is not in this source.
        """
        for key in keys:
            self._require(key)

    def check_pairs(self, pairs: list[Pair], pairs_name: str = "the pairs list") -> None:
        """Check that every image a pairs list names is here.

        Raises:
            DatasetError: naming the first missing image and its pairs line.
        """
        for pair in pairs:
            for key in (pair.path_a, pair.path_b):
                if key not in self._keys:
                    raise DatasetError(
                        f"image {key!r} listed in {pairs_name} line {pair.line} is not in "
                        f"{self.name}: check the pairs list, or that the images follow the "
                        "layout <root>/<Name>/<Name>_0001.jpg")


class FolderSource(ImageSource):
    """Images in a folder tree (LFW layout ``<root>/<Name>/<Name>_0001.jpg``), keyed by
    their POSIX path relative to ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"image folder {self.root} does not exist: pass the folder "
                               "that holds <Name>/<Name>_0001.jpg")
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        super().__init__(str(self.root), keys)

    def _read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


class TarSource(ImageSource):
    """Images inside a tar/tgz archive, read as it is (never extracted to disk).

    The member index is built once (one pass, ~1 s for LFW). A single top-level folder
    (``lfw/``) is dropped from keys, so they match a :class:`FolderSource` on the extracted
    tree. gzip cannot seek backwards without decompressing again from the start (~0.1 s a
    read for LFW): :meth:`preload` the images first when reading many in random order.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"archive {self.path} not found: check the path or the data root")
        try:
            self._tar = tarfile.open(self.path)
            members = [m for m in self._tar.getmembers()
                       if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot read archive {self.path} ({exc}): the file is not a "
                               "tar/tgz or is truncated; download it again") from exc
        names = {m.name.removeprefix("./"): m for m in members}  # "tar czf x.tgz ./lfw"
        tops = {name.split("/", 1)[0] for name in names}
        strip = len(tops) == 1 and all(name.count("/") >= 2 for name in names)
        self._members = {(n.split("/", 1)[1] if strip else n): m for n, m in names.items()}
        self._cache: dict[str, bytes] = {}
        super().__init__(str(self.path), self._members)
        logger.debug("indexed %d images in %s", len(self._members), self.path)

    def _read(self, key: str) -> bytes:
        if key in self._cache:
            return self._cache[key]
        return self._tar.extractfile(self._members[key]).read()

    def preload(self, keys: Iterable[str]) -> None:
        """Read these images into memory in one forward pass over the archive, so later
        random reads cost nothing (LFW's 7,701 pair images take ~70 MB, ~1 s).

        Raises:
            DatasetError: a key is not in the archive.
        """
        wanted = [key for key in dict.fromkeys(keys) if key not in self._cache]
        for key in wanted:
            self._require(key)
        for key in sorted(wanted, key=lambda k: self._members[k].offset_data):
            self._cache[key] = self._read(key)

    def close(self) -> None:
        """Close the archive (cached bytes stay readable)."""
        self._tar.close()


class MemorySource(ImageSource):
    """Images already in memory (e.g. from an InsightFace ``.bin``)."""

    def __init__(self, name: str, images: dict[str, bytes]):
        self._images = images
        super().__init__(name, images)

    def _read(self, key: str) -> bytes:
        return self._images[key]


def parse_pairs(path: str | os.PathLike, fmt: str = "auto") -> list[Pair]:
    """Read a pairs list.

    ``lfw``: the LFW ``pairs.txt``; header ``folds pairs_per_class`` (``10 300``) or one
    number (View 1, a single fold), then per fold the same-person lines ``name n1 n2``
    followed by as many different-person lines ``name1 n1 name2 n2``.
    ``csv``: ``path_a,path_b,is_same[,fold]`` per line (comma or tab, optional header row);
    without a fold column the pairs form 10 consecutive equal blocks.

    Args:
        path: the pairs file.
        fmt: ``"lfw"``, ``"csv"`` or ``"auto"`` (``csv`` for ``.csv``/``.tsv`` files).

    Returns:
        One :class:`Pair` per line, in file order (LFW: 6,000 pairs, keys ``Name/Name_0001.jpg``).

    Raises:
        DatasetError: missing file, unknown ``fmt``, or a malformed line (file, line, format).
    """
    path = Path(path)
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "lfw"
    if fmt not in ("lfw", "csv"):
        raise DatasetError(f"unknown pairs format {fmt!r}: use 'lfw', 'csv' or 'auto'")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read pairs file {path} ({exc}): check the path (LFW's "
                           f"is <data root>/{LFW_PAIRS})") from exc
    numbered = [(no, text) for no, text in enumerate(lines, 1) if text.strip()]
    if not numbered:
        raise DatasetError(f"pairs file {path} is empty")
    return _parse_lfw(numbered, path) if fmt == "lfw" else _parse_csv(numbered, path)


def _bad_line(path: Path, no: int, expected: str, text: str) -> DatasetError:
    return DatasetError(f"{path} line {no}: expected {expected}, got {text.strip()!r}")


def _lfw_key(name: str, number: str, path: Path, no: int, text: str) -> str:
    if not number.isdigit() or int(number) < 1:
        raise _bad_line(path, no, f"{LFW_SAME_FORMAT} or {LFW_DIFF_FORMAT}, image numbers "
                        "as positive integers", text)
    return f"{name}/{name}_{int(number):04d}.jpg"


def _parse_lfw(numbered: list[tuple[int, str]], path: Path) -> list[Pair]:
    """Parse LFW ``pairs.txt`` lines (non-empty, with line numbers)."""
    (head_no, head), body = numbered[0], numbered[1:]
    fields = head.split()
    if not 1 <= len(fields) <= 2 or not all(f.isdigit() and int(f) > 0 for f in fields):
        raise _bad_line(path, head_no, "a header 'folds pairs_per_class' like '10 300'", head)
    n_folds, per = (1, int(fields[0])) if len(fields) == 1 else map(int, fields)
    pairs = []
    for idx, (no, text) in enumerate(body):
        fold, pos = divmod(idx, 2 * per)
        parts = text.split()
        if len(parts) == 3:
            pair = Pair(_lfw_key(parts[0], parts[1], path, no, text),
                        _lfw_key(parts[0], parts[2], path, no, text), True, fold, no)
        elif len(parts) == 4:
            pair = Pair(_lfw_key(parts[0], parts[1], path, no, text),
                        _lfw_key(parts[2], parts[3], path, no, text), False, fold, no)
        else:
            raise _bad_line(path, no, f"{LFW_SAME_FORMAT} or {LFW_DIFF_FORMAT}", text)
        if pair.is_same != (pos < per):
            expected = LFW_SAME_FORMAT if pos < per else LFW_DIFF_FORMAT
            raise _bad_line(path, no, f"{expected}: each fold holds {per} same-person lines "
                            f"then {per} different-person lines", text)
        pairs.append(pair)
    if len(pairs) != n_folds * 2 * per:
        raise DatasetError(f"{path}: the header (line {head_no}) promises {n_folds} folds x 2 x "
                           f"{per} = {n_folds * 2 * per} pair lines, found {len(pairs)}")
    return pairs


def _parse_csv(numbered: list[tuple[int, str]], path: Path) -> list[Pair]:
    """Parse ``path_a,path_b,is_same[,fold]`` lines (non-empty, with line numbers)."""
    delimiter = "\t" if "\t" in numbered[0][1] else ","
    rows = [(no, [f.strip() for f in next(csv.reader([text], delimiter=delimiter))], text)
            for no, text in numbered]
    if len(rows[0][1]) >= 3 and _BOOLS.get(rows[0][1][2].lower()) is None:
        rows = rows[1:]  # a header row: its is_same column is a name, not a value
    pairs, has_fold = [], None
    for no, fields, text in rows:
        same = _BOOLS.get(fields[2].lower()) if len(fields) in (3, 4) else None
        if same is None or not all(fields[:2]) or has_fold not in (None, len(fields) == 4):
            raise _bad_line(path, no, CSV_FORMAT + ", the same number of columns on every line",
                            text)
        has_fold = len(fields) == 4
        if has_fold and not fields[3].lstrip("-").isdigit():
            raise _bad_line(path, no, "an integer fold in the 4th column", text)
        fold = int(fields[3]) if has_fold else -1
        pairs.append(Pair(_csv_key(fields[0]), _csv_key(fields[1]), same, fold, no))
    if not pairs:
        raise DatasetError(f"pairs file {path} holds a header but no pairs")
    if not has_fold:
        pairs = [p._replace(fold=i * 10 // len(pairs)) for i, p in enumerate(pairs)]
    return pairs


def _csv_key(value: str) -> str:
    """Normalise a path from a pairs CSV into a source key (POSIX, relative)."""
    return PurePosixPath(value.replace("\\", "/")).as_posix()


def open_verification_set(images: str | os.PathLike, pairs_file: str | os.PathLike | None = None,
                          fmt: str = "auto") -> tuple[ImageSource, list[Pair]]:
    """Open any verification set: an InsightFace ``.bin``, or images plus a pairs list.

    Args:
        images: a ``.bin`` file, an image folder or a tar/tgz archive.
        pairs_file: the pairs list (required unless ``images`` is a ``.bin``).
        fmt: pairs format, as in :func:`parse_pairs`.

    Returns:
        ``(source, pairs)``, every image of every pair checked to be in the source.

    Raises:
        DatasetError: missing or malformed files, or a listed image missing (named with its
            pairs line).
    """
    if Path(images).suffix.lower() == ".bin":
        from benchmarks.insightface_bin import load_insightface_bin  # needs Pair from here

        return load_insightface_bin(images)
    if pairs_file is None:
        raise DatasetError(f"{images} needs a pairs list: pass the pairs file (LFW pairs.txt "
                           f"or a CSV {CSV_FORMAT})")
    images = Path(images)
    if images.is_dir():
        source = FolderSource(images)
    elif images.name.lower().endswith(TAR_SUFFIXES):
        source = TarSource(images)
    else:
        raise DatasetError(f"cannot open {images} as images: expected a .bin, a folder or a "
                           f"file ending in one of {', '.join(TAR_SUFFIXES)}")
    pairs = parse_pairs(pairs_file, fmt)
    source.check_pairs(pairs, str(pairs_file))
    return source, pairs


def open_lfw(data_root: str | os.PathLike | None = None) -> tuple[ImageSource, list[Pair]]:
    """Open LFW View 2 (``lfw/lfw-a-gray.tgz``, ``lfw/pairs.txt``) under the data root
    (``data_root`` overrides ``$MASKEDGE_DATA_ROOT``), as :func:`open_verification_set` does.

    Raises:
        DataRootError: no data root, or it lacks the files. DatasetError: malformed files.
    """
    pairs_path = data_file(LFW_PAIRS, data_root)
    return open_verification_set(data_file(LFW_TGZ, data_root), pairs_path, fmt="lfw")
