"""Image sets for distillation: a folder or a tar/tgz read as it is, LFW layout or flat.

A source yields ``(key, encoded bytes)`` in storage order, so a 19,000-image tgz is read in
one forward pass (gzip cannot seek backwards cheaply). Keys are POSIX paths relative to the
set's root with a single top-level folder dropped (``lfw/Name/Name_0001.jpg`` ->
``Name/Name_0001.jpg``), so an archive and its extracted folder give the same keys.

In LFW layout (``<Name>/<Name>_0001.jpg``) the parent folder is the identity; the View 2 pairs
list assigns every person of a pair to one of ten identity-disjoint folds.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from edge.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar")


class ImageSet:
    """Images in a folder tree or a tar/tgz archive.

    Args:
        path: the folder or archive.

    Raises:
        DatasetError: the path is missing, or is neither a folder nor a tar/tgz.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            self.kind = "folder"
        elif self.path.is_file() and self.path.name.lower().endswith(TAR_SUFFIXES):
            self.kind = "archive"
        else:
            raise DatasetError(
                f"image set {self.path} not found or not a folder / {', '.join(TAR_SUFFIXES)} "
                "archive: pass a folder of images (LFW layout <Name>/<Name>_0001.jpg or flat) "
                "or an archive of one"
            )

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """Yield ``(key, bytes)`` for every image, in storage order."""
        if self.kind == "folder":
            for file in sorted(self._folder_files()):
                yield file.relative_to(self.path).as_posix(), file.read_bytes()
            return
        with _open_tar(self.path) as tar:
            strip = _single_top_folder([m.name for m in tar.getmembers() if _is_image(m)])
        # A fresh pass reads members and data strictly forward (seeking back in gzip is slow).
        with _open_tar(self.path) as tar:
            for member in tar:
                if _is_image(member):
                    yield _key(member.name, strip), tar.extractfile(member).read()

    def count(self) -> int:
        """Number of images (indexes an archive once)."""
        if self.kind == "folder":
            return sum(1 for _ in self._folder_files())
        with _open_tar(self.path) as tar:
            return sum(1 for m in tar.getmembers() if _is_image(m))

    def fingerprint(self) -> str:
        """A short content key: sha256 of the archive, or of the folder's names and sizes."""
        digest = hashlib.sha256()
        if self.kind == "archive":
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        else:
            for file in sorted(self._folder_files()):
                digest.update(f"{file.relative_to(self.path).as_posix()}:{file.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]

    def _folder_files(self) -> Iterator[Path]:
        return (p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot read archive {path} ({exc}): not a tar/tgz or truncated; "
                           "download it again") from exc


def _is_image(member: tarfile.TarInfo) -> bool:
    return member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES)


def _single_top_folder(names: list[str]) -> bool:
    names = [n.removeprefix("./") for n in names]
    tops = {n.split("/", 1)[0] for n in names}
    return len(tops) == 1 and all(n.count("/") >= 1 for n in names)


def _key(name: str, strip: bool) -> str:
    name = name.removeprefix("./")
    return name.split("/", 1)[1] if strip else name


def identity_of(key: str) -> str:
    """Identity of an image key in LFW layout: its parent folder (``Name/Name_0001.jpg``)."""
    parent = PurePosixPath(key).parent.name
    if not parent:
        raise DatasetError(f"image {key!r} is not in LFW layout <Name>/<Name>_0001.jpg: "
                           "identity-labelled runs need one folder per person")
    return parent


def lfw_person_folds(pairs_path: str | os.PathLike) -> dict[str, int]:
    """Map each person named in an LFW View 2 ``pairs.txt`` to its fold (1-based, 1..10).

    View 2's ten folds are identity-disjoint, so a person belongs to exactly one fold.

    Raises:
        DatasetError: the file is missing or malformed, or a person appears in two folds.
    """
    path = Path(pairs_path)
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as exc:
        raise DatasetError(f"cannot read pairs list {path} ({exc}): pass LFW's pairs.txt") from exc
    head = lines[0] if lines else []
    if len(head) != 2 or not all(f.isdigit() for f in head):
        raise DatasetError(f"{path}: expected a header 'folds pairs_per_class' like '10 300'")
    per_fold = 2 * int(head[1])
    folds: dict[str, int] = {}
    for index, fields in enumerate(lines[1:]):
        if len(fields) not in (3, 4):
            raise DatasetError(f"{path}: pair line {index + 2} has {len(fields)} fields, expected 3 or 4")
        fold = index // per_fold + 1
        for name in (fields[0], fields[2]) if len(fields) == 4 else (fields[0],):
            if folds.setdefault(name, fold) != fold:
                raise DatasetError(f"{path}: {name} appears in folds {folds[name]} and {fold}; "
                                   "View 2 folds must be identity-disjoint")
    return folds
