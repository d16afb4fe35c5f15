"""The enrolled-people gallery: one SQLite file, templates encrypted at rest.

Why SQLite: every change is one transaction in a write-ahead log, so a power cut or a kill
in the middle of an enrolment leaves either the old gallery or the new one, never half a
person. Enrolment appends rows (no rebuild), and the in-memory template matrix the door
loop scores against is patched in place on each change.

A gallery belongs to one model: templates of different models are not comparable, so the
model card's sha256 is stored at creation and a different card is refused at open.
Face images are not stored unless the gallery was created with ``thumbnails=True``.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge.access.crypto import RecordCipher
from edge.access.errors import GalleryError, GalleryModelError
from edge.access.store import TemplateSet, TemplateStore
from edge.card import ModelCard

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_KIND = re.compile(r"^[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?$")
_MAX_NAME = 200
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE people (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    kind TEXT NOT NULL, blob BLOB NOT NULL, thumbnail BLOB, created TEXT NOT NULL);
CREATE INDEX templates_person ON templates(person_id);
"""


@dataclass(frozen=True)
class Person:
    """One enrolled person as listed by ``Gallery.people``."""

    id: int
    name: str
    created: str
    updated: str
    kinds: tuple[str, ...]

    @property
    def templates(self) -> int:
        """Number of stored templates."""
        return len(self.kinds)


class Gallery:
    """An open gallery. Use ``Gallery.create`` or ``Gallery.open``, then ``close`` (or ``with``).

    Not thread-safe: one door loop owns one ``Gallery``. Other processes may enrol at the
    same time; their commits are picked up by ``templates()`` (SQLite's data_version).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, card: ModelCard,
                 cipher: RecordCipher, meta: dict[str, str]) -> None:
        self.path = path
        self.card = card
        self.gallery_id = meta["gallery_id"]
        self.thumbnails = meta["thumbnails"] == "1"
        self._conn = conn
        self._store = TemplateStore(conn, cipher, self.gallery_id, card.embedding_size)

    # ---- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, card: ModelCard, key: bytes, *,
               thumbnails: bool = False) -> Gallery:
        """Create a new, empty gallery for the model described by ``card``.

        Args:
            path: the SQLite file to create (its folder must exist).
            card: the card of the embedding model every template will come from.
            key: the 32-byte key from ``crypto.load_key``.
            thumbnails: also store an encrypted face crop per template (off: no images).

        Raises:
            GalleryError: ``path`` exists or cannot be created.
            GalleryKeyError: the key is malformed.
        """
        path = Path(path)
        if path.exists():
            raise GalleryError(f"gallery {path} already exists: open it, or remove it first")
        cipher = RecordCipher(key)
        gallery_id = uuid.uuid4().hex
        meta = {
            "schema_version": str(SCHEMA_VERSION), "gallery_id": gallery_id,
            "model_name": card.name, "model_sha256": card.sha256,
            "embedding_size": str(card.embedding_size), "thumbnails": "1" if thumbnails else "0",
            "key_check": cipher.make_check(gallery_id).hex(), "created": _now(),
        }
        conn = _connect(path)
        with _transaction(conn):
            # One statement at a time: executescript would commit the open transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        log.info("created gallery %s for model %s", path, card.name)
        return cls(path, conn, card, cipher, meta)

    @classmethod
    def open(cls, path: str | os.PathLike, card: ModelCard, key: bytes) -> Gallery:
        """Open an existing gallery and load its templates into memory.

        Raises:
            GalleryError: the file is missing, not a gallery, or of another schema version.
            GalleryModelError: the gallery was enrolled with a different model.
            GalleryKeyError: ``key`` is not the gallery's key.
        """
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"gallery {path} not found: create it by enrolling someone")
        cipher = RecordCipher(key)
        conn = _connect(path)
        try:
            meta = _read_meta(conn, path)
            _check_model(meta, card, path)
            cipher.verify_check(bytes.fromhex(meta["key_check"]), meta["gallery_id"], str(path))
            gallery = cls(path, conn, card, cipher, meta)
            gallery._store.reload()
        except BaseException:
            conn.close()
            raise
        return gallery

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- changes ------------------------------------------------------------------------
    def enroll(self, name: str, embeddings: np.ndarray, kinds: Sequence[str],
               thumbnails: Sequence[np.ndarray] | None = None) -> Person:
        """Add templates for ``name``, creating the person if new; one transaction.

        Args:
            name: the person's unique name.
            embeddings: (N, D) float embeddings from the gallery's model (re-normalised).
            kinds: N labels such as ``"photo"`` or ``"masked:surgical_blue"``.
            thumbnails: N aligned BGR uint8 crops, only if the gallery stores thumbnails.

        Returns:
            The person after enrolment.

        Raises:
            GalleryError: bad name, kinds, shapes or non-finite values, or thumbnails
                given to a gallery created without them.
        """
        name = _check_name(name)
        vectors = self._store.check_embeddings(embeddings)
        kinds = _check_kinds(kinds, len(vectors))
        images = self._check_thumbnails(thumbnails, len(vectors))
        now = _now()
        with _transaction(self._conn):
            row = self._conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            if row is None:
                person_id = self._conn.execute(
                    "INSERT INTO people (name, created, updated) VALUES (?, ?, ?)",
                    (name, now, now)).lastrowid
            else:
                person_id = row[0]
                self._conn.execute("UPDATE people SET updated = ? WHERE id = ?", (now, person_id))
            ids = self._store.insert(person_id, vectors, kinds, images, now)
        # Only after the commit: a rolled-back transaction must not touch the cache.
        self._store.added(person_id, name, ids, vectors)
        log.info("enrolled %s: %d template(s) (%s)", name, len(ids), ", ".join(sorted(set(kinds))))
        return self.person(name)

    def remove(self, name: str) -> int:
        """Delete a person and all their templates; return how many templates went.

        Raises:
            GalleryError: no such person.
        """
        person_id = self._person_id(name)
        with _transaction(self._conn):
            count = self._conn.execute("DELETE FROM templates WHERE person_id = ?",
                                       (person_id,)).rowcount
            self._conn.execute("DELETE FROM people WHERE id = ?", (person_id,))
        self._store.removed(person_id)
        log.info("removed %s (%d template(s))", name, count)
        return count

    def rename(self, old: str, new: str) -> Person:
        """Rename a person; templates stay bound to the person id, so nothing is re-sealed.

        Raises:
            GalleryError: ``old`` is unknown or ``new`` is taken or invalid.
        """
        person_id = self._person_id(old)
        new = _check_name(new)
        with _transaction(self._conn):
            if self._conn.execute("SELECT 1 FROM people WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"cannot rename {old!r} to {new!r}: that name is already "
                                   "enrolled; remove or rename the other person first")
            self._conn.execute("UPDATE people SET name = ?, updated = ? WHERE id = ?",
                               (new, _now(), person_id))
        self._store.renamed(person_id, new)
        log.info("renamed %s -> %s", old, new)
        return self.person(new)

    # ---- reading ------------------------------------------------------------------------
    def templates(self) -> TemplateSet:
        """The in-memory template matrix the decider scores against (kept current)."""
        return self._store.snapshot()

    def people(self) -> list[Person]:
        """All enrolled people, by name."""
        rows = self._conn.execute(
            "SELECT p.id, p.name, p.created, p.updated, group_concat(t.kind, char(31)) "
            "FROM people p LEFT JOIN templates t ON t.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name").fetchall()
        return [Person(i, n, c, u, tuple(k.split("\x1f")) if k else ()) for i, n, c, u, k in rows]

    def person(self, name: str) -> Person:
        """One enrolled person.

        Raises:
            GalleryError: no such person.
        """
        for person in self.people():
            if person.name == name:
                return person
        raise GalleryError(f"{name!r} is not enrolled in {self.path}")

    def thumbnails_of(self, name: str) -> list[np.ndarray]:
        """The stored face crops of ``name`` (empty if the gallery keeps none)."""
        return self._store.thumbnails(self._person_id(name))

    def __len__(self) -> int:
        return self._conn.execute("SELECT count(*) FROM people").fetchone()[0]

    def _person_id(self, name: str) -> int:
        row = self._conn.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise GalleryError(f"{name!r} is not enrolled in {self.path}; enrolled: "
                               f"{', '.join(p.name for p in self.people()[:20]) or 'nobody'}")
        return row[0]

    def _check_thumbnails(self, thumbnails: Sequence[np.ndarray] | None,
                          count: int) -> list[np.ndarray | None]:
        if thumbnails is None:
            return [None] * count
        if not self.thumbnails:
            raise GalleryError(f"gallery {self.path} was created without thumbnails: face images "
                               "are not stored; enrol without thumbnails or create a gallery "
                               "with thumbnails=True")
        if len(thumbnails) != count:
            raise GalleryError(f"{count} embeddings but {len(thumbnails)} thumbnails")
        return list(thumbnails)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        # Autocommit mode: transactions are opened explicitly by _transaction.
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process intact; a power cut may lose the
        # last commits but never leaves a half-written one.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as err:
        raise GalleryError(f"{path} is not a readable SQLite gallery ({err})") from err
    return conn


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (including KeyboardInterrupt)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as err:
        raise GalleryError(f"{path} is not a MaskEdge gallery ({err}): pass the gallery file, "
                           "or enrol into a new path") from err
    needed = {"schema_version", "gallery_id", "model_name", "model_sha256", "embedding_size",
              "thumbnails", "key_check"}
    missing = sorted(needed - set(meta))
    if missing:
        raise GalleryError(f"{path} lacks gallery metadata {missing}: it is not a MaskEdge "
                           "gallery or its creation was interrupted; delete it and re-enrol")
    if meta["schema_version"] != str(SCHEMA_VERSION):
        raise GalleryError(f"{path} has gallery schema {meta['schema_version']}; this kit reads "
                           f"schema {SCHEMA_VERSION}: use the matching kit version or re-enrol")
    return meta


def _check_model(meta: dict[str, str], card: ModelCard, path: Path) -> None:
    if meta["model_sha256"] != card.sha256:
        raise GalleryModelError(
            f"gallery {path} was enrolled with model {meta['model_name']!r} (sha256 "
            f"{meta['model_sha256'][:12]}...), but the model given is {card.name!r} (sha256 "
            f"{card.sha256[:12]}...): templates of different models cannot be compared. Run "
            f"with model {meta['model_name']!r}, or re-enrol everyone with {card.name!r} into "
            "a new gallery"
        )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > _MAX_NAME:
        raise GalleryError(f"a person's name must be non-empty text of at most {_MAX_NAME} "
                           f"characters, got {name!r}")
    return name.strip()


def _check_kinds(kinds: Sequence[str], count: int) -> list[str]:
    kinds = [kinds] * count if isinstance(kinds, str) else list(kinds)
    if len(kinds) != count:
        raise GalleryError(f"{count} embeddings but {len(kinds)} kinds: give one kind per template")
    bad = [k for k in kinds if not isinstance(k, str) or not _KIND.match(k)]
    if bad:
        raise GalleryError(f"invalid template kind(s) {bad[:3]}: use e.g. 'photo' or "
                           "'masked:<mask template>' (lowercase, digits, _ - ; detail after ':')")
    return kinds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
