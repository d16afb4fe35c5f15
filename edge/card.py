"""Model card: the JSON that travels beside every model file and is all ``edge/`` needs.

A card says how to feed the model (input size, colour order, normalisation, layout, fixed
batch), what comes out (embedding size), where the model came from (provenance, licence),
the sha256 of the file (checked at load), decision thresholds with the false-accept rate
they were calibrated at and on what data, and measured accuracy. The schema is versioned;
``ModelCard.load`` validates every field and names the bad one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ModelCardError, ModelFileError

SCHEMA_VERSION = 1
CARD_SUFFIX = ".card.json"
COLOR_ORDERS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")
PRECISIONS = ("fp32", "fp16", "int8", "int8bq", "mixed")


@dataclass(frozen=True)
class InputSpec:
    """How an aligned face crop (uint8, BGR, HxWx3) becomes the model's input tensor.

    The tensor is ``(pixel[color] - mean) / std`` in float32, laid out as ``layout``.
    ``batch`` is set when the graph only accepts a fixed batch size (the runtime pads).
    """

    size: tuple[int, int] = (112, 112)
    color: str = "rgb"
    layout: str = "nchw"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    batch: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_choice("input.color", self.color, COLOR_ORDERS)
        _check_choice("input.layout", self.layout, LAYOUTS)
        _check_choice("input.dtype", self.dtype, ("float32", "uint8"))
        if len(self.size) != 2 or min(self.size) < 16:
            raise ModelCardError(f"input.size must be [height, width] >= 16, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelCardError("input.mean and input.std need 3 values each, std > 0")
        if self.batch is not None and self.batch < 1:
            raise ModelCardError(f"input.batch must be a positive integer or null, got {self.batch}")


@dataclass(frozen=True)
class Threshold:
    """A cosine threshold that gives false-accept rate ``far`` on ``data``."""

    far: float
    cosine: float
    data: str
    tar: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.far < 1:
            raise ModelCardError(f"threshold far must be in (0, 1), got {self.far}")
        if not -1 <= self.cosine <= 1:
            raise ModelCardError(f"threshold cosine must be in [-1, 1], got {self.cosine}")


@dataclass(frozen=True)
class ModelCard:
    """Everything the device needs to run one embedding model file."""

    name: str
    architecture: str
    file: str
    sha256: str
    format: str
    precision: str
    embedding_size: int
    input: InputSpec = field(default_factory=InputSpec)
    provenance: dict[str, str] = field(default_factory=dict)
    licence: str = "unknown"
    thresholds: tuple[Threshold, ...] = ()
    accuracy: dict[str, Any] = field(default_factory=dict)
    # Files the model needs beside it, name -> sha256 (an OpenVINO .xml's .bin holds the
    # weights: without its hash a corrupted .bin of the right size would load silently).
    companions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ModelCardError(
                f"card schema version {self.schema_version} is not supported (this kit reads "
                f"version {SCHEMA_VERSION}); re-export the model with this kit's version"
            )
        _check_choice("precision", self.precision, PRECISIONS)
        if self.embedding_size < 2:
            raise ModelCardError(f"embedding_size must be >= 2, got {self.embedding_size}")
        if len(self.sha256) != 64:
            raise ModelCardError("sha256 must be 64 hex digits; recompute it with `main.py models card`")

    # ---- decisions -------------------------------------------------------------------
    def threshold_at(self, far: float) -> Threshold:
        """Return the threshold calibrated at exactly ``far``.

        The door's security level is the FAR the user chose; silently taking the nearest
        calibrated one would change it, so a FAR the card lacks is an error.

        Raises:
            ModelCardError: no thresholds, or none at ``far`` (the message lists those there are).
        """
        import math

        if not self.thresholds:
            raise ModelCardError(
                f"card {self.name} has no calibrated thresholds: run `main.py eval --model "
                f"{self.name} --write-card` to calibrate them on masked LFW"
            )
        for threshold in self.thresholds:
            if math.isclose(threshold.far, far, rel_tol=1e-6):
                return threshold
        known = ", ".join(f"{t.far:g}" for t in sorted(self.thresholds, key=lambda t: t.far))
        raise ModelCardError(f"card {self.name} has no threshold calibrated at FAR {far:g}; "
                             f"choose one of: {known} (or recalibrate with `main.py eval --write-card`)")

    # ---- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the card as pretty JSON to ``path`` (usually ``card_path(model)``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "card") -> ModelCard:
        """Build and validate a card from parsed JSON; errors name ``where`` and the field."""
        if not isinstance(raw, dict):
            raise ModelCardError(f"{where}: expected a JSON object")
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ModelCardError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        try:
            raw["input"] = _build(InputSpec, raw.get("input", {}), f"{where}: input")
            raw["thresholds"] = tuple(
                _build(Threshold, t, f"{where}: thresholds") for t in raw.get("thresholds", ())
            )
            return cls(**raw)
        except TypeError as err:  # missing required field or wrong arity
            raise ModelCardError(f"{where}: {err}") from None

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read and validate a card file.

        Raises:
            ModelCardError: the file is missing, not JSON or fails validation.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelCardError(f"model card {path} not found: every model needs its card beside it")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelCardError(f"model card {path} is not valid JSON ({err}); re-export the model") from None
        return cls.from_dict(raw, where=str(path))


def _build(kind: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ModelCardError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ModelCardError(f"{where}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return kind(**values)
    except TypeError as err:
        raise ModelCardError(f"{where}: {err}") from None


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ModelCardError(f"{name} is {value!r}; valid values: {', '.join(map(str, valid))}")


def card_path(model_path: Path) -> Path:
    """The card that belongs to ``model_path``: ``model.onnx`` -> ``model.onnx.card.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + CARD_SUFFIX)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def companion_hashes(model_path: Path) -> dict[str, str]:
    """sha256 of the files a model file needs beside it (an OpenVINO ``.xml``'s ``.bin``)."""
    model_path = Path(model_path)
    weights = model_path.with_suffix(".bin")
    return {weights.name: sha256_file(weights)} if model_path.suffix == ".xml" and weights.is_file() else {}


def verify_checksum(model_path: Path, card: ModelCard) -> None:
    """Raise ``ModelFileError`` if the file's (or a companion's) sha256 differs from the card's."""
    model_path = Path(model_path)
    files = {model_path: card.sha256} | {model_path.with_name(n): h for n, h in card.companions.items()}
    for path, expected in files.items():
        if not path.is_file():
            raise ModelFileError(f"{path} is missing: it belongs beside {model_path.name} "
                                 "(copy both files, or re-export)")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelFileError(
                f"{path} does not match its card (sha256 {actual[:12]}... vs card "
                f"{expected[:12]}...): the file is truncated, corrupt or was replaced; "
                "re-download or re-export it"
            )
