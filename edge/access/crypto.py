"""Gallery encryption at rest: one AES-256-GCM key, a fresh 96-bit nonce per record.

A face template is biometric data: whoever copies the gallery file must not be able to
read, swap or replay templates. Each record is sealed with AES-GCM; its associated data
names the gallery, the person and the template row, so a blob moved to another row or
another gallery fails authentication instead of quietly admitting the wrong person.

The key comes from exactly one place: the environment variable ``MASKEDGE_GALLERY_KEY``
(base64 of 32 bytes) or a key file holding the same text. A missing key file is created
with mode 0600; a key file other users can read is refused, because it would hand the key
to every account on the device.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Mapping

from edge.access.errors import GalleryKeyError

log = logging.getLogger(__name__)

KEY_ENV = "MASKEDGE_GALLERY_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits: the size GCM is specified for; random per record
_CHECK_PLAINTEXT = b"maskedge gallery key check v1"


def _aesgcm():
    # Imported lazily so the rest of edge/ works on a device without `cryptography`.
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as err:
        raise GalleryKeyError(
            "the encrypted gallery needs the cryptography package: pip install cryptography"
        ) from err
    return AESGCM


def load_key(key_file: str | os.PathLike | None = None, *, create: bool = True,
             environ: Mapping[str, str] | None = None) -> bytes:
    """Return the 32-byte gallery key from ``$MASKEDGE_GALLERY_KEY`` or ``key_file``.

    Args:
        key_file: a file holding the base64 key; created (mode 0600) when missing and
            ``create`` is true. Leave it ``None`` to use the environment variable.
        create: create a missing key file with a new random key.
        environ: the environment to read (default ``os.environ``; tests pass a dict).

    Returns:
        The raw 32-byte key.

    Raises:
        GalleryKeyError: both or neither source is given, the key is not base64 of 32
            bytes, the key file is readable or writable by other users, or it is missing
            and ``create`` is false.
    """
    environ = os.environ if environ is None else environ
    from_env = environ.get(KEY_ENV)
    if from_env and key_file is not None:
        raise GalleryKeyError(
            f"two gallery keys given: ${KEY_ENV} and the key file {key_file}; unset {KEY_ENV} "
            "or drop the key file option, so it is clear which key opens the gallery"
        )
    if from_env:
        return decode_key(from_env, f"${KEY_ENV}")
    if key_file is None:
        raise GalleryKeyError(
            f"no gallery key: set {KEY_ENV} to base64 of 32 random bytes "
            "(e.g. `openssl rand -base64 32`) or pass a key file (created if missing)"
        )
    path = Path(key_file).expanduser()
    if not path.exists():
        if not create:
            raise GalleryKeyError(f"key file {path} does not exist: pass the key file the gallery "
                                  "was created with")
        return create_key_file(path)
    check_key_file_permissions(path)
    return decode_key(path.read_text(encoding="ascii", errors="replace"), f"key file {path}")


def create_key_file(path: str | os.PathLike) -> bytes:
    """Write a new random key to ``path`` with mode 0600 and return it.

    Raises:
        GalleryKeyError: the file already exists or cannot be written.
    """
    path = Path(path)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise GalleryKeyError(f"key file {path} already exists: refusing to overwrite a key") from err
    except OSError as err:
        raise GalleryKeyError(f"cannot create key file {path} ({err.strerror}): check the folder") from err
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(key).decode("ascii") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    # The umask can only remove bits, but chmod states the intent on odd filesystems.
    os.chmod(path, 0o600)
    log.info("created gallery key file %s (mode 0600); back it up: without it the gallery "
             "cannot be read", path)
    return key


def check_key_file_permissions(path: Path) -> None:
    """Refuse a key file that other users can read or write; warn on group access.

    Raises:
        GalleryKeyError: the file is not a regular file or is world-readable/writable.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise GalleryKeyError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise GalleryKeyError(
            f"key file {path} has mode {mode:04o}: every user on this device can read or change "
            f"it; run `chmod 600 {path}` (and consider the key exposed: re-key the gallery)"
        )
    if mode & (stat.S_IRGRP | stat.S_IWGRP):
        log.warning("key file %s has mode %04o: its group can read it; chmod 600 unless a "
                    "service group needs it", path, mode)


def decode_key(text: str, where: str) -> bytes:
    """Decode base64 ``text`` into a 32-byte key.

    Raises:
        GalleryKeyError: not base64, or not 32 bytes once decoded.
    """
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise GalleryKeyError(f"{where} is not valid base64 ({err}): it must hold base64 of "
                              f"{KEY_BYTES} random bytes, e.g. from `openssl rand -base64 32`") from None
    if len(key) != KEY_BYTES:
        raise GalleryKeyError(f"{where} decodes to {len(key)} bytes; an AES-256 gallery key is "
                              f"{KEY_BYTES} bytes (`openssl rand -base64 32`)")
    return key


class RecordCipher:
    """Seal and open gallery records with AES-256-GCM.

    A sealed record is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``.

    Args:
        key: the 32-byte key from ``load_key``.

    Raises:
        GalleryKeyError: the key is not 32 bytes.
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise GalleryKeyError(f"a gallery key is {KEY_BYTES} raw bytes; use load_key()")
        self._aead = _aesgcm()(bytes(key))

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``associated`` under a fresh random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes | None:
        """Decrypt a sealed record; ``None`` when authentication fails.

        ``None`` (not an exception) because the caller knows what a failure means here:
        a wrong key at the check value, a tampered or moved row elsewhere.
        """
        from cryptography.exceptions import InvalidTag

        if len(sealed) < NONCE_BYTES + 16:
            return None
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except InvalidTag:
            return None

    def make_check(self, gallery_id: str) -> bytes:
        """The key check value stored in a new gallery's meta table."""
        return self.seal(_CHECK_PLAINTEXT, _check_aad(gallery_id))

    def verify_check(self, sealed: bytes, gallery_id: str, where: str) -> None:
        """Raise unless this key opens the gallery's key check value.

        Raises:
            GalleryKeyError: the key is not the one the gallery was created with.
        """
        if self.open(sealed, _check_aad(gallery_id)) != _CHECK_PLAINTEXT:
            raise GalleryKeyError(
                f"the gallery key does not open {where}: it was created with another key. Use "
                f"the key file or ${KEY_ENV} it was created with; without that key the "
                "gallery cannot be read and everyone must be re-enrolled into a new one"
            )


def _check_aad(gallery_id: str) -> bytes:
    return f"maskedge:key-check:{gallery_id}".encode()
