"""Append-only audit log: one JSON line per decision, size-rotated, flushed per line.

Why JSON lines: a line is self-contained, so a log cut off by a power failure loses at
most its last line and every other line still parses; ``jq`` and pandas read it as is.
Files rotate like logrotate: ``audit.jsonl`` -> ``audit.jsonl.1`` -> ... -> ``.<keep>``,
the oldest dropped, so the log never fills the device's storage.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.access.decide import Decision
from edge.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditContext:
    """Facts shared by every decision of one frame."""

    model: str
    model_sha256: str
    latency_ms: float
    frame: int
    source: str


class AuditLog:
    """Writes decisions as JSON lines to ``path``, rotating at ``max_bytes``.

    Args:
        path: the live log file (its folder is created).
        max_bytes: rotate before a line would make the file larger than this.
        keep: number of rotated files kept beside the live one.
        fsync: also ``os.fsync`` each line (survives a power cut; slower on SD cards).

    Raises:
        ConfigError: ``max_bytes`` < 1024 or ``keep`` < 1.
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int = 10 * 1024 * 1024,
                 keep: int = 5, fsync: bool = False) -> None:
        if max_bytes < 1024 or keep < 1:
            raise ConfigError(f"audit log needs max_bytes >= 1024 and keep >= 1, got "
                              f"{max_bytes} and {keep}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.keep = int(keep)
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    def write(self, decision: Decision, context: AuditContext,
              box: tuple[float, float, float, float] | None = None) -> dict[str, Any]:
        """Append one decision; return the record written.

        Args:
            decision: the face's decision.
            context: model, latency and frame facts.
            box: the face box (x, y, w, h) in frame pixels, if any.
        """
        record = make_record(decision, context, box)
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        self.write_line(line)
        return record

    def write_line(self, line: str) -> None:
        """Append one already-serialised line (ending in a newline), rotating first if needed."""
        size = len(line.encode("utf-8"))
        if self._handle.tell() > 0 and self._handle.tell() + size > self.max_bytes:
            self._rotate()
        self._handle.write(line)
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the live file."""
        self._handle.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def files(self) -> list[Path]:
        """The live file and the rotated ones that exist, newest first."""
        rotated = [self._rotated(i) for i in range(1, self.keep + 1)]
        return [p for p in [self.path, *rotated] if p.exists()]

    def _rotated(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _rotate(self) -> None:
        self._handle.close()
        self._rotated(self.keep).unlink(missing_ok=True)
        for index in range(self.keep - 1, 0, -1):
            if self._rotated(index).exists():
                os.replace(self._rotated(index), self._rotated(index + 1))
        os.replace(self.path, self._rotated(1))
        self._handle = open(self.path, "a", encoding="utf-8")
        log.debug("rotated audit log %s", self.path)


def make_record(decision: Decision, context: AuditContext,
                box: tuple[float, float, float, float] | None = None) -> dict[str, Any]:
    """The JSON object for one decision (floats rounded; NaN never written)."""
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "person": decision.person or "unknown",
        "admitted": decision.admitted,
        "reason": decision.reason,
        "score": _round(decision.score),
        "threshold": _round(decision.threshold),
        "far": decision.far,
        "margin": _round(decision.margin),
        "candidate": decision.candidate,
        "detail": decision.detail,
        "model": context.model,
        "model_sha256": context.model_sha256,
        "latency_ms": _round(context.latency_ms, 2),
        "frame": context.frame,
        "source": context.source,
        "box": None if box is None else [round(float(v), 1) for v in box],
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or value != value:  # None or NaN
        return None
    return round(float(value), digits)
