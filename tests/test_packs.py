"""Evaluation packs and the protocol driver on real data: deterministic masks, a manifest
that changes with the seed and the templates, and a protocol that scores an oracle
perfectly and a blind embedder at chance."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest

from benchmarks.evaluate import evaluate_embedder
from benchmarks.packs import load_custom_pack, load_pack
from edge.errors import ConfigError, DataRootError


@pytest.fixture()
def bin_set(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKEDGE_CACHE", str(tmp_path / "cache"))
    return str(data_root / "samples" / "small_lfw.bin")


def test_same_seed_same_pixels_new_seed_new_pack(bin_set, tmp_path, monkeypatch):
    first = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    monkeypatch.setenv("MASKEDGE_CACHE", str(tmp_path / "other-cache"))
    again = load_custom_pack(bin_set, seed=0, workers=2, progress=False)
    assert again.key == first.key and again.folder != first.folder
    np.testing.assert_array_equal(again.masked, first.masked)
    other = load_custom_pack(bin_set, seed=1, workers=1, progress=False)
    assert other.key != first.key
    np.testing.assert_array_equal(other.unmasked, first.unmasked)
    assert (other.masked != first.masked).any()
    assert other.manifest["seed"] == 1 and first.manifest["templates"]


def test_manifest_changes_with_templates(bin_set, data_root, tmp_path, monkeypatch):
    base = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    root = tmp_path / "root"
    shutil.copytree(data_root / "masks", root / "masks")
    cfg = root / "masks" / "masktheface" / "masks.cfg"
    cfg.write_text(cfg.read_text().replace("mask_e:     295, 470", "mask_e:     295, 480", 1))
    monkeypatch.setenv("MASKEDGE_DATA_ROOT", str(root))
    moved = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    assert moved.key != base.key
    assert moved.manifest["templates"]["surgical"] != base.manifest["templates"]["surgical"]


def test_masks_cover_the_lower_face(bin_set):
    pack = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    landmarks = np.load(pack.folder / "landmarks.npy")
    changed = np.abs(pack.masked.astype(int) - pack.unmasked.astype(int)).sum(-1) > 0
    for i in range(len(pack)):
        nose, mouth = landmarks[i, 2].round().astype(int), landmarks[i, 3:].round().astype(int)
        eyes = landmarks[i, :2].round().astype(int)
        assert changed[i, nose[1], nose[0]] and all(changed[i, y, x] for x, y in mouth)
        assert not any(changed[i, y, x] for x, y in eyes)


def _oracle(pack):
    """An embedder that knows each crop's identity: perfect separation."""
    lookup = {}
    for crops in (pack.unmasked, pack.masked):
        for i, crop in enumerate(crops):
            lookup[hashlib.sha1(np.asarray(crop).tobytes()).hexdigest()] = pack.ids[i]
    dim = int(pack.ids.max()) + 1

    def embed(batch):
        out = np.zeros((len(batch), dim), np.float32)
        for row, crop in enumerate(batch):
            out[row, lookup[hashlib.sha1(crop.tobytes()).hexdigest()]] = 1
        return out

    return embed


def test_protocol_on_an_oracle_and_a_blind_embedder(bin_set):
    pack = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    perfect = evaluate_embedder(_oracle(pack), pack, progress=False)
    for name in ("U-U", "U-M", "M-M"):
        assert perfect[name]["accuracy"] == 1.0 and perfect[name]["eer"] == 0.0
        assert perfect[name]["tar_at_far"]["0.01"]["tar"] == 1.0
    blind = evaluate_embedder(lambda b: np.ones((len(b), 4), np.float32), pack, progress=False)
    assert blind["U-U"]["auc"] == pytest.approx(0.5)  # every score ties: no separation at all


def test_unknown_set_and_pack(bin_set):
    pack = load_custom_pack(bin_set, seed=0, workers=1, progress=False)
    with pytest.raises(ConfigError, match="valid sets: U-U, U-M, M-M"):
        evaluate_embedder(lambda b: b.reshape(len(b), -1)[:, :8], pack, sets=("U-X",))
    with pytest.raises(ConfigError, match="valid packs: lfw-masked"):
        load_pack("megaface")


def test_missing_data_root(monkeypatch):
    monkeypatch.delenv("MASKEDGE_DATA_ROOT", raising=False)
    with pytest.raises(DataRootError, match="MASKEDGE_DATA_ROOT"):
        load_pack("lfw-masked")
