"""Result files: one JSON per bench run and device, versioned, merged by device for reports.

A file holds ``{"schema", "schema_version", "device", "created", "system", "calibration",
"models": [...], "pipeline": [...], "gallery": [...], "door": [...]}``; each ``models`` entry is a
``harness.bench_model`` record. Files from other devices (a Jetson, a Raspberry Pi) that were
written by this kit merge into one report, keyed by ``device``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.errors import ConfigError

RUN_SCHEMA = "maskedge.latency.run"
RUN_SCHEMA_VERSION = 1


@dataclass
class RunResults:
    """All measurements of one device (one file, or several merged)."""

    device: str
    system: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, dict[str, float]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    pipeline: list[dict[str, Any]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)
    door: list[dict[str, Any]] = field(default_factory=list)  # door.bench_door records
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": RUN_SCHEMA, "schema_version": RUN_SCHEMA_VERSION, "device": self.device,
                "created": self.created, "system": self.system, "calibration": self.calibration,
                "models": self.models, "pipeline": self.pipeline, "gallery": self.gallery,
                "door": self.door}

    def save(self, path: Path) -> Path:
        """Write pretty JSON to ``path`` (parents created); returns ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, raw: Any, where: str = "results") -> RunResults:
        """Validate and build from parsed JSON.

        Raises:
            ConfigError: not a MaskEdge latency file, or a schema version this kit cannot read.
        """
        if not isinstance(raw, dict) or raw.get("schema") != RUN_SCHEMA:
            raise ConfigError(f"{where} is not a MaskEdge latency result file (schema {RUN_SCHEMA!r}); "
                              "pass a results.json written by `main.py bench`")
        if raw.get("schema_version") != RUN_SCHEMA_VERSION:
            raise ConfigError(f"{where} has schema version {raw.get('schema_version')}, this kit reads "
                              f"{RUN_SCHEMA_VERSION}: re-run the bench with this kit's version")
        known = {"device", "created", "system", "calibration", "models", "pipeline", "gallery", "door"}
        return cls(**{k: v for k, v in raw.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> RunResults:
        """Read a result file.

        Raises:
            ConfigError: missing, not JSON, or not a latency result file.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"result file {path} not found")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"result file {path} is not valid JSON ({err})") from None
        return cls.from_dict(raw, where=str(path))


def merge(runs: list[RunResults]) -> dict[str, RunResults]:
    """Merge runs by device; the records of one device are concatenated in the given order."""
    merged: dict[str, RunResults] = {}
    for run in runs:
        if run.device not in merged:
            merged[run.device] = RunResults(device=run.device, system=run.system,
                                            calibration=dict(run.calibration), created=run.created)
        target = merged[run.device]
        target.calibration.update(run.calibration)
        target.models.extend(run.models)
        target.pipeline.extend(run.pipeline)
        target.gallery.extend(run.gallery)
        target.door.extend(run.door)
    return merged


def combine_rounds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record for a measurement repeated in rounds: the round with the median latency,
    with every round's median kept under ``rounds``.

    Why rounds: on a shared machine the background load drifts over minutes, and one pass
    over the models measures each at a different moment (in one such pass onnxruntime at 2
    threads came out slower than at 1). Repeating the pass, in alternating order, and keeping
    the median round makes a drift that hits one round hit no figure.
    """
    if not records:
        raise ValueError("combine_rounds needs at least one record")
    ordered = sorted(records, key=lambda r: r["stats"]["median_ms"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])  # lower middle: a measured round, not an average
    chosen["rounds"] = {"count": len(records), "median_ms": [r["stats"]["median_ms"] for r in records]}
    return chosen
