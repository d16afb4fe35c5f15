"""The calibration split: real aligned faces, unmasked and masked, that no evaluation pair uses.

INT8 ranges, QAT distillation, parity checks and the cards' FAR thresholds all need real
faces, and none may come from the masked-LFW evaluation. The default source is LFW's
*held-out* images: the 5,532 of 13,233 that none of the 6,000 View 2 pairs use. Images are
taken a few per person (so George W. Bush does not fill the set), detected with YuNet,
aligned on the 5-point template and masked with ``edge.masks`` by the same code that builds
the evaluation packs (``benchmarks.pack_build``), then cached under ``$MASKEDGE_CACHE``.

Other sources: ``utkface`` (the data root's UTKFace chips; no identities, so every image
counts as its own person) or any folder / tgz of face photos (identity = parent folder).

Sources join with ``+``; the default, ``lfw-holdout+utkface``, takes half its faces from each.
LFW here is grayscale, so a split of LFW alone could not tell a card's RGB from BGR (both
channels orders give the same pixels) and would calibrate INT8 ranges on grey faces only,
while a door camera sees colour: the UTKFace half brings colour (UTKFace also trains the
students, which is fine for INT8 ranges and parity; the LFW half has identities, for TAR).

The last ``check`` faces of each source are held back from calibration and training: the
parity gate runs on them, so an export is judged on faces its INT8 ranges never saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ConfigError
from edge.paths import cache_dir, data_file
from quantize.errors import CalibrationError

log = logging.getLogger(__name__)
VERSION = 1  # bump when the crops would come out differently
SOURCES = ("lfw-holdout", "utkface", "<folder or .tgz of face photos>")
DEFAULT_SOURCE = "lfw-holdout+utkface"
UTKFACE = "train/utkface-s19000.tgz"
PER_PERSON = 4  # at most this many images of one person
BIAS_FACES = 128  # faces bias correction measures (both INT8 routes): spread, pairs kept together


@dataclass(frozen=True)
class CalibrationConfig:
    """Which faces make the calibration split.

    Attributes:
        source: ``lfw-holdout``, ``utkface`` or a folder / tgz of face photos, or several
            joined with ``+`` (the faces are shared equally).
        size: faces to use (before dropping images without a detected face).
        check: faces held back for the parity gate (at most a quarter of the set).
        seed: picks the images and their masks.
    """

    source: str = DEFAULT_SOURCE
    size: int = 512
    check: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise CalibrationError(
                f"the calibration set is empty (size {self.size}): pass --calib N with N >= 16 "
                "real faces (512 recommended)")
        if self.check < 1:
            raise ConfigError(f"check must be >= 1 face, got {self.check}")
        for part in self.parts:
            if part not in SOURCES[:2] and not Path(part).expanduser().exists():
                raise ConfigError(f"calibration source {part!r} is neither one of "
                                  f"{', '.join(SOURCES[:2])} nor an existing folder / tgz "
                                  "(join several with '+')")

    @property
    def parts(self) -> list[str]:
        return [p.strip() for p in self.source.split("+") if p.strip()]


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Aligned crops of the calibration split (arrays in row order).

    Attributes:
        name: where the faces came from, for cards ("lfw-holdout 512 faces, seed 0").
        key: content key of the cached set.
        unmasked: uint8 BGR (N, 112, 112, 3).
        masked: the same faces with a rendered mask.
        ids: identity index per face.
        keys: image keys.
        n_check: the last ``n_check`` faces are the parity check faces.
    """

    name: str
    key: str
    unmasked: np.ndarray
    masked: np.ndarray
    ids: np.ndarray
    keys: list[str]
    n_check: int

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def n_calib(self) -> int:
        return len(self) - self.n_check

    def calibration_faces(self) -> np.ndarray:
        """Faces for INT8 ranges and QAT: the calibration part, even rows unmasked, odd masked."""
        n = self.n_calib
        return np.where((np.arange(n) % 2 == 1)[:, None, None, None], self.masked[:n], self.unmasked[:n])

    def check_faces(self) -> np.ndarray:
        """Held-back faces for the parity gate: each check face unmasked and masked."""
        return np.concatenate([self.unmasked[self.n_calib:], self.masked[self.n_calib:]])

    def training_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibration part's unmasked and masked crops, for QAT distillation."""
        return self.unmasked[:self.n_calib], self.masked[:self.n_calib]


def load_calibration(config: CalibrationConfig = CalibrationConfig(), workers: int = 2,
                     progress: bool = True) -> CalibrationSet:
    """Build (once) and return the calibration split.

    Raises:
        CalibrationError: the source holds no usable face.
        DataRootError / DatasetError: the data root or source is missing or unreadable.
    """
    if len(config.parts) > 1:
        return _merge([load_calibration(part, workers, progress) for part in _split(config)])
    source, keys, fingerprint = _open_source(config)
    by_folder = config.source != "utkface"
    chosen = _choose(keys, config.size, config.seed, by_folder)
    if not chosen:
        raise CalibrationError(f"the calibration set is empty: {config.source} holds no image "
                               "(expected .jpg/.png face photos); pass another --calib-source")
    recipe = {"version": VERSION, "source": config.source, "fingerprint": fingerprint,
              "keys": chosen, "seed": config.seed}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("calibration") / f"{_slug(config.source)}-{key}.npz"
    if not path.is_file():
        _build(source, chosen, config.seed, path, workers, progress, by_folder)
    with np.load(path) as data:
        unmasked, masked, ids, kept = data["unmasked"], data["masked"], data["ids"], list(data["keys"])
    if len(kept) < 2:
        raise CalibrationError(f"the calibration set is empty: no face was detected in the "
                               f"{len(chosen)} images chosen from {config.source}; pass a source of "
                               "face photos (--calib-source) or a larger --calib")
    n_check = max(1, min(config.check, len(kept) // 4))
    name = f"{config.source} calibration split: {len(kept)} faces (seed {config.seed}), {n_check} held back"
    log.info("%s (%s)", name, path)
    return CalibrationSet(name, key, unmasked, masked, ids, kept, n_check)


def load_training_faces(calibration: CalibrationSet, size: int, source: str = "utkface",
                        seed: int = 1, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``size`` more faces (unmasked, masked) for QAT, none of them a parity-check face.

    QAT on the calibration split alone (~450 faces) learns those faces and loses on the
    held-back ones; UTKFace, the students' own training set, has 19,000. The set is built and
    cached like a calibration split (another seed); faces that are check faces of
    ``calibration`` are dropped, so the parity gate still judges on faces QAT never saw.
    """
    extra = load_calibration(CalibrationConfig(source, size, check=1, seed=seed), progress=progress)
    checks = set(calibration.keys[calibration.n_calib:])
    keep = np.array([k not in checks and f"{source}:{k}" not in checks for k in extra.keys])
    log.info("QAT faces: %d from %s (%d parity-check faces left out)", int(keep.sum()), source,
             int((~keep).sum()))
    return extra.unmasked[keep], extra.masked[keep]


def _split(config: CalibrationConfig) -> list[CalibrationConfig]:
    parts = config.parts
    sizes = [config.size // len(parts) + (i < config.size % len(parts)) for i in range(len(parts))]
    return [dataclasses.replace(config, source=part, size=max(size, 1), check=max(config.check // len(parts), 1))
            for part, size in zip(parts, sizes)]


def _merge(sets: list[CalibrationSet]) -> CalibrationSet:
    """One split from several: every calibration part first, then every check part."""
    calib = [slice(0, s.n_calib) for s in sets]
    check = [slice(s.n_calib, len(s)) for s in sets]
    offsets = np.cumsum([0] + [int(s.ids.max()) + 1 for s in sets[:-1]])

    def stack(attr: str) -> np.ndarray:
        return np.concatenate([getattr(s, attr)[r] for rows in (calib, check) for s, r in zip(sets, rows)])

    ids = np.concatenate([s.ids[r] + o for rows in (calib, check) for s, r, o in zip(sets, rows, offsets)])
    keys = [f"{s.name.split(' ')[0]}:{k}" for rows in (calib, check) for s, r in zip(sets, rows)
            for k in s.keys[r]]
    name = " + ".join(s.name for s in sets)
    key = hashlib.sha256("".join(s.key for s in sets).encode()).hexdigest()[:16]
    return CalibrationSet(name, key, stack("unmasked"), stack("masked"), ids, keys,
                          sum(s.n_check for s in sets))


def _open_source(config: CalibrationConfig):
    from benchmarks.datasets import FolderSource, TarSource, open_lfw, unique_images

    if config.source == "lfw-holdout":
        source, pairs = open_lfw()
        used = set(unique_images(pairs))
        return source, [k for k in source.keys() if k not in used], _stat(data_file("lfw/lfw-a-gray.tgz"))
    path = data_file(UTKFACE) if config.source == "utkface" else Path(config.source).expanduser()
    source = FolderSource(path) if path.is_dir() else TarSource(path)
    return source, source.keys(), _stat(path)


def _stat(path: Path) -> str:
    # Content, not mtime: a data root copied or re-provisioned (new mtimes) keeps its caches.
    if path.is_dir():  # a folder: its path and mtime (which adding or removing a file changes)
        return f"{path.resolve()}:{int(os.stat(path).st_mtime)}"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name}:{os.stat(path).st_size}:{digest.hexdigest()[:16]}"


def _person(key: str, by_folder: bool = True) -> str:
    # LFW layout and user folders: the parent folder is the person. UTKFace has no identities.
    return key.rsplit("/", 1)[0] if by_folder and "/" in key else key


def _choose(keys: list[str], size: int, seed: int, by_folder: bool) -> list[str]:
    """Up to ``size`` keys, at most ``PER_PERSON`` per person, people in random order."""
    rng = np.random.default_rng(seed)
    people: dict[str, list[str]] = {}
    for key in sorted(keys):
        people.setdefault(_person(key, by_folder), []).append(key)
    chosen: list[str] = []
    for person in rng.permutation(sorted(people)):
        group = people[str(person)]
        picks = rng.permutation(len(group))[:PER_PERSON]
        chosen.extend(group[i] for i in sorted(picks))
        if len(chosen) >= size:
            break
    return chosen[:size]


def _build(source, keys: list[str], seed: int, path: Path, workers: int, progress: bool,
           by_folder: bool) -> None:
    from benchmarks.pack_build import render_images

    log.info("building the calibration split: %d images (detect, align, mask)", len(keys))
    source.preload(keys)
    result = render_images(source, keys, seed, workers=workers, progress=progress)
    found = np.array([info.get("detected", False) for info in result.per_image], bool)
    if not found.all():
        log.info("calibration: dropped %d images without a detected face", int((~found).sum()))
    kept = [k for k, f in zip(keys, found) if f]
    people = {p: i for i, p in enumerate(dict.fromkeys(_person(k, by_folder) for k in kept))}
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, unmasked=result.unmasked[found], masked=result.masked[found],
             ids=np.array([people[_person(k, by_folder)] for k in kept], np.int64), keys=np.array(kept))
    os.replace(tmp, path)


def _slug(source: str) -> str:
    return source if source in SOURCES else Path(source).name.replace(".", "_")[:40]


def bias_faces(tensor: np.ndarray, size: int | None = None) -> np.ndarray:
    """About ``size`` (default ``BIAS_FACES``) faces spread over the calibration ``tensor``,
    keeping its unmasked/masked pairs together: what bias correction measures."""
    size = BIAS_FACES if size is None else size
    pairs = len(tensor) // 2
    if pairs * 2 <= size:
        return tensor
    starts = 2 * np.linspace(0, pairs - 1, size // 2).astype(int)
    return tensor[np.stack([starts, starts + 1], 1).reshape(-1)]
