"""Download a file with a checksum, atomically: what a user with internet runs.

The kit never needs the network when the data root already holds the file; this is the path
for users who have no copy yet. Tests exercise it against a loopback server with small files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from edge.card import sha256_file
from edge.errors import DataRootError

log = logging.getLogger(__name__)


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a file with the right checksum is already there.

    The file is written to a temporary name in the same folder and renamed only after its
    sha256 matched, so an interrupted download never leaves a half file under ``dest``.

    Raises:
        DataRootError: the download failed or the checksum did not match.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s -> %s", url, dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
        if sha256 and digest.hexdigest() != sha256:
            raise DataRootError(
                f"{url} downloaded with sha256 {digest.hexdigest()[:12]}..., expected "
                f"{sha256[:12]}...: the server sent another file; place a verified copy at {dest}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        raise DataRootError(
            f"could not download {url} ({err}): with no internet, put the file at {dest} "
            "or set MASKEDGE_DATA_ROOT to a folder that has it"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest

