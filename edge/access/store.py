"""Sealed template rows and the in-memory matrix built from them.

The door loop scores every face against all templates, so the templates are decrypted
once at open into one float32 matrix. Changes made through the same ``Gallery`` patch
that matrix (append rows, drop a person's rows, rename); commits from other processes
are noticed through SQLite's ``PRAGMA data_version`` and trigger one full reload.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.access.crypto import RecordCipher
from edge.access.errors import GalleryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TemplateSet:
    """All templates, grouped by person, ready for scoring.

    Attributes:
        matrix: float32 (M, D) L2-normalised templates, rows of one person contiguous.
        starts: int (P,) first row of each person in ``matrix`` (for ``np.maximum.reduceat``).
        names: the P person names, in the order of ``starts``.
    """

    matrix: np.ndarray
    starts: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


class TemplateStore:
    """Seals template rows into the database and mirrors them in memory."""

    def __init__(self, conn: sqlite3.Connection, cipher: RecordCipher, gallery_id: str,
                 dim: int) -> None:
        self._conn = conn
        self._cipher = cipher
        self._gallery_id = gallery_id
        self._dim = dim
        self._ids = np.zeros(0, np.int64)  # template row ids
        self._owners = np.zeros(0, np.int64)  # person id of each row
        self._matrix = np.zeros((0, dim), np.float32)
        self._names: dict[int, str] = {}
        self._snapshot: TemplateSet | None = None
        self._data_version = self._version()

    # ---- database side (called inside the gallery's transaction) -------------------------
    def insert(self, person_id: int, vectors: np.ndarray, kinds: Sequence[str],
               images: Sequence[np.ndarray | None], now: str) -> list[int]:
        """Insert sealed rows; return their ids. The caller owns the transaction."""
        ids = []
        for vector, kind, image in zip(vectors, kinds, images):
            # The row id is part of the associated data, so insert first, then seal.
            row_id = self._conn.execute(
                "INSERT INTO templates (person_id, kind, blob, created) VALUES (?, ?, x'', ?)",
                (person_id, kind, now)).lastrowid
            aad = self._aad(person_id, row_id, kind)
            blob = self._cipher.seal(vector.astype("<f4").tobytes(), aad)
            thumb = None if image is None else self._cipher.seal(_encode_png(image), aad + b":thumb")
            self._conn.execute("UPDATE templates SET blob = ?, thumbnail = ? WHERE id = ?",
                               (blob, thumb, row_id))
            ids.append(row_id)
        return ids

    def reload(self) -> None:
        """Read and decrypt every template row (at open, or after another process wrote).

        Raises:
            GalleryError: a row fails authentication (tampered, moved or corrupt).
        """
        self._data_version = self._version()
        rows = self._conn.execute(
            "SELECT t.id, t.person_id, t.kind, t.blob FROM templates t ORDER BY t.id").fetchall()
        vectors = [self._unseal(pid, tid, kind, blob) for tid, pid, kind, blob in rows]
        self._ids = np.array([r[0] for r in rows], np.int64)
        self._owners = np.array([r[1] for r in rows], np.int64)
        self._matrix = (np.stack(vectors) if vectors else np.zeros((0, self._dim))).astype(np.float32)
        self._names = dict(self._conn.execute("SELECT id, name FROM people").fetchall())
        self._snapshot = None
        log.debug("loaded %d template(s) of %d people", len(rows), len(self._names))

    def thumbnails(self, person_id: int) -> list[np.ndarray]:
        """Decrypt and decode the stored crops of one person."""
        rows = self._conn.execute("SELECT id, kind, thumbnail FROM templates WHERE person_id = ? "
                                  "AND thumbnail IS NOT NULL ORDER BY id", (person_id,)).fetchall()
        out = []
        for row_id, kind, sealed in rows:
            data = self._cipher.open(sealed, self._aad(person_id, row_id, kind) + b":thumb")
            if data is None:
                raise GalleryError(f"thumbnail of template {row_id} fails authentication: the "
                                   "gallery was altered; restore it from a backup")
            out.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
        return out

    # ---- memory side (called after a commit) ----------------------------------------------
    def added(self, person_id: int, name: str, ids: list[int], vectors: np.ndarray) -> None:
        """Append committed rows to the in-memory matrix."""
        self._sync()
        self._ids = np.concatenate([self._ids, np.asarray(ids, np.int64)])
        self._owners = np.concatenate([self._owners, np.full(len(ids), person_id, np.int64)])
        self._matrix = np.concatenate([self._matrix, vectors.astype(np.float32)])
        self._names[person_id] = name
        self._snapshot = None

    def removed(self, person_id: int) -> None:
        """Drop a deleted person's rows from memory."""
        self._sync()
        keep = self._owners != person_id
        self._ids, self._owners, self._matrix = self._ids[keep], self._owners[keep], self._matrix[keep]
        self._names.pop(person_id, None)
        self._snapshot = None

    def renamed(self, person_id: int, name: str) -> None:
        """Record a new name; the matrix is unchanged."""
        self._sync()
        self._names[person_id] = name
        self._snapshot = None

    def snapshot(self) -> TemplateSet:
        """The current templates grouped by person (cached until the next change)."""
        self._sync()
        if self._snapshot is None:
            order = np.argsort(self._owners, kind="stable")
            owners = self._owners[order]
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else owners
            names = tuple(self._names[int(owners[s])] for s in starts)
            self._snapshot = TemplateSet(self._matrix[order], starts.astype(np.int64), names)
        return self._snapshot

    def check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Validate (N, D) finite embeddings and L2-normalise them.

        Raises:
            GalleryError: wrong shape or size, empty, non-finite or zero rows.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or len(x) == 0 or x.shape[1] != self._dim:
            raise GalleryError(f"embeddings must have shape (N>=1, {self._dim}) for this gallery's "
                               f"model, got {np.shape(embeddings)}: embed aligned crops with its model")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if not np.all(np.isfinite(x)) or np.any(norms == 0):
            raise GalleryError("embeddings contain NaN, infinity or all-zero rows: the model or "
                               "its input is broken; check the crops")
        return (x / norms).astype(np.float32)

    # ---- internals -------------------------------------------------------------------------
    def _sync(self) -> None:
        # data_version changes only when *another* connection commits.
        if self._version() != self._data_version:
            log.info("gallery changed by another process; reloading its templates")
            self.reload()

    def _version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _aad(self, person_id: int, row_id: int, kind: str) -> bytes:
        return f"maskedge:template:{self._gallery_id}:{person_id}:{row_id}:{kind}".encode()

    def _unseal(self, person_id: int, row_id: int, kind: str, sealed: bytes) -> np.ndarray:
        data = self._cipher.open(sealed, self._aad(person_id, row_id, kind))
        if data is None or len(data) != 4 * self._dim:
            raise GalleryError(f"template {row_id} (person id {person_id}) fails authentication: "
                               "the row was altered, moved or corrupted; restore the gallery "
                               "from a backup or re-enrol that person")
        return np.frombuffer(data, "<f4")


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.asarray(image, np.uint8))
    if not ok:
        raise GalleryError(f"cannot encode a thumbnail of shape {np.shape(image)}: pass BGR uint8 crops")
    return buf.tobytes()
