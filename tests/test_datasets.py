"""Data set readers on the real LFW files from the data root and on tiny files made here."""

from __future__ import annotations

import os
import pickle
import tarfile

import cv2
import numpy as np
import pytest

from benchmarks import datasets as ds
from benchmarks.insightface_bin import load_insightface_bin
from edge.errors import DataRootError, DatasetError
from edge.paths import data_file


@pytest.fixture(scope="module")
def lfw_pairs():
    return ds.parse_pairs(data_file(ds.LFW_PAIRS))


@pytest.fixture(scope="module")
def lfw_tar():
    return ds.TarSource(data_file(ds.LFW_TGZ))


def _jpeg(value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), value, np.uint8))
    return buf.tobytes()


@pytest.fixture()
def image_folder(tmp_path):
    """A tiny LFW-layout folder: Ann (2 images), Bob (1 image)."""
    root = tmp_path / "images"
    for key in ("Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(_jpeg())
    return root


def test_real_lfw_pairs(lfw_pairs):
    assert len(lfw_pairs) == 6000
    is_same, folds = ds.pair_labels(lfw_pairs)
    assert is_same.sum() == 3000
    np.testing.assert_array_equal(np.bincount(folds), [600] * 10)
    np.testing.assert_array_equal(folds, np.repeat(np.arange(10), 600))
    assert is_same[:300].all() and not is_same[300:600].any()
    assert len(ds.unique_images(lfw_pairs)) == 7701
    assert lfw_pairs[0] == ds.Pair("Abel_Pacheco/Abel_Pacheco_0001.jpg",
                                   "Abel_Pacheco/Abel_Pacheco_0004.jpg", True, 0, 2)


def test_tgz_reader(lfw_tar, lfw_pairs):
    assert len(lfw_tar) == 13233
    lfw_tar.check_pairs(lfw_pairs)
    image = lfw_tar.read_image("Abel_Pacheco/Abel_Pacheco_0001.jpg")
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8
    keys = ["Zico/Zico_0002.jpg", "AJ_Cook/AJ_Cook_0001.jpg"]
    lfw_tar.preload(keys)
    assert all(lfw_tar.read_bytes(key)[:2] == b"\xff\xd8" for key in keys)
    with pytest.raises(DatasetError, match="Nobody_0001"):
        lfw_tar.read_bytes("Nobody/Nobody_0001.jpg")


def test_tar_source_matches_folder_source(tmp_path, image_folder):
    archive = tmp_path / "tiny.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="lfw")
    tar_source, folder = ds.TarSource(archive), ds.FolderSource(image_folder)
    assert tar_source.keys() == folder.keys() == ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg",
                                                  "Bob/Bob_0001.jpg"]
    tar_source.preload(tar_source.keys())
    tar_source.close()  # preloaded bytes outlive the archive handle
    assert tar_source.read_bytes("Bob/Bob_0001.jpg") == folder.read_bytes("Bob/Bob_0001.jpg")
    assert folder.read_image("Ann/Ann_0002.jpg").shape == (8, 8, 3)


def test_missing_image_names_image_and_line(tmp_path, image_folder):
    pairs_file = tmp_path / "pairs.txt"
    pairs_file.write_text("1\t1\nAnn\t1\t2\nAnn\t1\tCarl\t1\n")
    with pytest.raises(DatasetError, match=r"Carl/Carl_0001\.jpg.*pairs\.txt line 3"):
        ds.open_verification_set(image_folder, pairs_file)


def test_image_folder_with_csv_pairs(tmp_path, image_folder):
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("Ann/Ann_0001.jpg,Ann/Ann_0002.jpg,1\n"
                          "Ann/Ann_0001.jpg,Bob/Bob_0001.jpg,0\n")
    source, pairs = ds.open_verification_set(image_folder, pairs_file)
    assert isinstance(source, ds.FolderSource) and [p.is_same for p in pairs] == [True, False]
    assert source.read_image(pairs[1].path_b).shape == (8, 8, 3)


@pytest.mark.parametrize(("text", "match"), [
    ("2 1\nAnn 1 2\nAnn 1 Bob 1\nAnn 1\nAnn 1 Bob 1\n", r"line 4: expected 'name n1 n2'"),
    ("1 1\nAnn 1 x\nAnn 1 Bob 1\n", r"line 2: expected 'name n1 n2'.*positive integers"),
    ("1 1\nAnn 1 Bob 1\nAnn 1 2\n", r"line 2: expected 'name n1 n2'.*1 same-person lines"),
    ("2 1\nAnn 1 2\nAnn 1 Bob 1\n", r"promises 2 folds x 2 x 1 = 4 pair lines, found 2"),
    ("ten 300\nAnn 1 2\n", r"line 1: expected a header"),
])
def test_malformed_lfw_pairs(tmp_path, text, match):
    path = tmp_path / "bad_pairs.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=match) as info:
        ds.parse_pairs(path)
    assert "bad_pairs.txt" in str(info.value)


def test_csv_pairs_with_header_and_folds(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("path_a,path_b,is_same,fold\na/1.jpg,a/2.jpg,1,0\na/1.jpg,b/1.jpg,false,1\n")
    assert ds.parse_pairs(path) == [ds.Pair("a/1.jpg", "a/2.jpg", True, 0, 2),
                                    ds.Pair("a/1.jpg", "b/1.jpg", False, 1, 3)]


def test_tsv_pairs_without_folds_get_ten_blocks(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"x/{i}.jpg\ty/{i}.jpg\t{i % 2}\n" for i in range(20)))
    pairs = ds.parse_pairs(path)
    np.testing.assert_array_equal(ds.pair_labels(pairs)[1], np.repeat(np.arange(10), 2))


def test_malformed_csv_pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("a.jpg,b.jpg,1\na.jpg,c.jpg,maybe\n")
    with pytest.raises(DatasetError, match=r"pairs\.csv line 2: expected 'path_a,path_b"):
        ds.parse_pairs(path)


def test_insightface_bin_sample():
    source, pairs = load_insightface_bin(data_file("samples/small_lfw.bin"))
    assert len(source) == 20 and len(pairs) == 10
    assert all(p.is_same for p in pairs)
    assert [p.fold for p in pairs] == list(range(10))
    assert (pairs[3].path_a, pairs[3].path_b) == ("00006.jpg", "00007.jpg")
    assert source.read_image(pairs[0].path_a).shape == (112, 112, 3)


def test_bin_with_numpy_bools_and_python3_bytes(tmp_path):
    path = tmp_path / "made.bin"
    path.write_bytes(pickle.dumps(([_jpeg(10), _jpeg(20)] * 2, np.array([True, False])),
                                  protocol=2))
    source, pairs = load_insightface_bin(path)
    assert [p.is_same for p in pairs] == [True, False]
    assert source.read_image("00003.jpg").shape == (8, 8, 3)


class _Exploit:
    def __reduce__(self):
        return (os.getcwd, ())


def test_bin_refuses_code_in_the_pickle(tmp_path):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([_Exploit()], [True])))
    with pytest.raises(DatasetError, match="posix.getcwd is not allowed|getcwd is not allowed"):
        load_insightface_bin(path)


def test_bin_with_wrong_image_count(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(pickle.dumps(([_jpeg()] * 3, [True, False])))
    with pytest.raises(DatasetError, match="3 images for 2 pairs"):
        load_insightface_bin(path)


def test_missing_files_raise_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match="nope.txt.*check the path"):
        ds.parse_pairs(tmp_path / "nope.txt")
    with pytest.raises(DatasetError, match="not found"):
        ds.TarSource(tmp_path / "nope.tgz")
    with pytest.raises(DatasetError, match="does not exist"):
        ds.FolderSource(tmp_path / "nope")
    (tmp_path / "pairs.csv").write_text("a.jpg,b.jpg,1\n")
    with pytest.raises(DatasetError, match="expected a .bin, a folder or a file ending"):
        ds.open_verification_set(tmp_path / "images.zip", tmp_path / "pairs.csv")
    with pytest.raises(DatasetError, match="needs a pairs list"):
        ds.open_verification_set(tmp_path)
    with pytest.raises(DataRootError, match="lfw/pairs.txt"):
        ds.open_lfw(tmp_path)
    monkeypatch.delenv("MASKEDGE_DATA_ROOT", raising=False)
    with pytest.raises(DataRootError, match="MASKEDGE_DATA_ROOT"):
        ds.open_lfw()
