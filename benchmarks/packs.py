"""Evaluation packs: aligned, masked and unmasked crops of a verification set, built once.

A pack holds every distinct image of a pairs list aligned to 112x112 (5-point ArcFace), the
same crop with a synthetic mask rendered by ``edge.masks`` (template, colour and view chosen
per image from the seed), the pairs as index arrays, and a manifest recording the source
hashes, seed and templates. Its folder name is a hash of all of that, so changing the seed
or a template builds a new pack, and the same inputs always give the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.datasets import ImageSource, Pair, open_lfw, open_verification_set, unique_images
from edge.card import sha256_file
from edge.errors import ConfigError, DatasetError
from edge.paths import cache_dir, data_file

log = logging.getLogger(__name__)
PACK_VERSION = 1  # bump when crops or masks would come out differently
SIZE = (112, 112)
PACKS = ("lfw-masked",)


@dataclass
class Pack:
    """An evaluation pack opened from its cache folder (arrays are memory-mapped)."""

    name: str
    key: str
    folder: Path
    keys: list[str]
    unmasked: np.ndarray  # (N, 112, 112, 3) uint8 BGR
    masked: np.ndarray  # (N, 112, 112, 3) uint8 BGR
    idx_a: np.ndarray
    idx_b: np.ndarray
    is_same: np.ndarray
    fold: np.ndarray
    ids: np.ndarray  # identity index per image, for all-vs-all impostor pairs
    manifest: dict

    @classmethod
    def open(cls, folder: Path) -> Pack:
        """Open a built pack; DatasetError if it is incomplete (a build was interrupted)."""
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise DatasetError(f"pack {folder} is incomplete: delete the folder and build it again")
        manifest = json.loads(manifest_path.read_text())
        pairs = np.load(folder / "pairs.npy")
        return cls(
            name=manifest["name"], key=manifest["key"], folder=folder, keys=manifest["keys"],
            unmasked=np.load(folder / "unmasked.npy", mmap_mode="r"),
            masked=np.load(folder / "masked.npy", mmap_mode="r"),
            idx_a=pairs[:, 0], idx_b=pairs[:, 1], is_same=pairs[:, 2].astype(bool),
            fold=pairs[:, 3], ids=np.load(folder / "ids.npy"), manifest=manifest,
        )

    def __len__(self) -> int:
        return len(self.keys)


def load_pack(name: str = "lfw-masked", seed: int = 0, data_root: str | None = None,
              workers: int = 2, progress: bool = True) -> Pack:
    """Open the named pack, building and caching it first if needed.

    Raises:
        ConfigError: unknown pack name. DataRootError/DatasetError: missing or bad data.
    """
    if name != "lfw-masked":
        raise ConfigError(f"unknown pack {name!r}; valid packs: {', '.join(PACKS)} (or use "
                          "build_pack for an image folder + pairs list or a .bin set)")
    source, pairs = open_lfw(data_root)
    hashes = {"lfw/lfw-a-gray.tgz": sha256_file(data_file("lfw/lfw-a-gray.tgz", data_root)),
              "lfw/pairs.txt": sha256_file(data_file("lfw/pairs.txt", data_root))}
    return build_pack(name, source, pairs, hashes, seed=seed, workers=workers, progress=progress)


def load_custom_pack(images: str, pairs_file: str | None = None, seed: int = 0,
                     workers: int = 2, progress: bool = True) -> Pack:
    """A pack from any image folder/tgz + pairs list, or an InsightFace ``.bin`` set."""
    source, pairs = open_verification_set(images, pairs_file)
    hashes = {str(images): _path_hash(Path(images))}
    if pairs_file:
        hashes[str(pairs_file)] = sha256_file(Path(pairs_file))
    aligned = str(images).endswith(".bin")  # .bin sets hold aligned 112x112 crops already
    return build_pack(Path(images).stem, source, pairs, hashes, seed=seed, workers=workers,
                      progress=progress, aligned=aligned)


def build_pack(name: str, source: ImageSource, pairs: list[Pair], hashes: dict[str, str],
               seed: int = 0, workers: int = 2, progress: bool = True,
               aligned: bool = False) -> Pack:
    """Build (or reopen) a pack from any image source and pairs list."""
    from benchmarks.pack_build import render_images
    from edge.masks import MaskLibrary

    library = MaskLibrary()
    from benchmarks.pack_build import EVAL_STYLES

    templates = {t: _template_hash(library, t) for t in library.names
                 if library.template(t).style in EVAL_STYLES}
    recipe = {"version": PACK_VERSION, "name": name, "sources": hashes, "seed": seed,
              "templates": templates, "size": SIZE, "aligned_input": aligned}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir("packs") / f"{name}-{key}"
    if (folder / "manifest.json").is_file():
        return Pack.open(folder)
    keys = unique_images(pairs)
    source.preload(keys)
    log.info("building pack %s (%d images, seed %d) in %s", name, len(keys), seed, folder)
    result = render_images(source, keys, seed, workers=workers, progress=progress, aligned=aligned)
    _write(folder, recipe | {"key": key, "keys": keys, "per_image": result.per_image},
           result, keys, pairs)
    return Pack.open(folder)


def _write(folder: Path, manifest: dict, result, keys: list[str], pairs: list[Pair]) -> None:
    # Write into a temporary folder and rename it at the end: an interrupted build never
    # leaves a pack that looks complete.
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    index = {k: i for i, k in enumerate(keys)}
    rows = [(index[p.path_a], index[p.path_b], int(p.is_same), p.fold) for p in pairs]
    np.save(tmp / "pairs.npy", np.array(rows, dtype=np.int64))
    np.save(tmp / "unmasked.npy", result.unmasked)
    np.save(tmp / "masked.npy", result.masked)
    np.save(tmp / "landmarks.npy", result.landmarks)
    digests = [hashlib.sha1(np.ascontiguousarray(c).tobytes()).hexdigest() for c in result.unmasked]
    np.save(tmp / "ids.npy", identities(keys, pairs, digests))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder)


def identities(keys: list[str], pairs: list[Pair], digests: list[str] | None = None) -> np.ndarray:
    """Identity index per image: the folder name (LFW layout), else linked by same-person pairs.

    Sets without names (an InsightFace .bin) only say which pairs match; images joined by a
    genuine pair, or byte-identical (a .bin repeats images across pairs), share an identity.
    """
    if all("/" in k for k in keys):
        names = [k.split("/")[0] for k in keys]
    else:
        parent = list(range(len(keys)))
        index = {k: i for i, k in enumerate(keys)}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        links = [(index[p.path_a], index[p.path_b]) for p in pairs if p.is_same]
        first_of: dict[str, int] = {}
        for i, digest in enumerate(digests or ()):
            links.append((i, first_of.setdefault(digest, i)))
        for a, b in links:
            parent[root(a)] = root(b)
        names = [str(root(i)) for i in range(len(keys))]
    lookup = {n: i for i, n in enumerate(sorted(set(names)))}
    return np.array([lookup[n] for n in names], dtype=np.int64)


def _template_hash(library, name: str) -> str:
    template = library.template(name)
    digest = hashlib.sha256(np.ascontiguousarray(template.image).tobytes())
    digest.update(np.asarray(template.anchors, np.float64).tobytes())
    return digest.hexdigest()[:16]


def _path_hash(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    listing = sorted(str(p.relative_to(path)) + str(p.stat().st_size) for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()
