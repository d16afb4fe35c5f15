"""Distillation data on real images: preparation (detect, align, drop faceless, cache), pHash
copy detection, the teacher-cosine exclusion, LFW fold splits, the masked-KD dataset and the
epoch sampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from distill.data.dataset import AugmentConfig, MaskedFaceDataset, flip_landmarks, to_tensor
from distill.data.dedup import exclude_near_duplicates
from distill.data.faces import FaceSet, prepare_faces
from distill.data.phash import DEFAULT_THRESHOLD, hamming, nearest, phash
from distill.data.sampler import EpochSampler
from distill.data.sources import ImageSet, lfw_person_folds
from distill.data.splits import holdout_split, lfw_fold_split
from edge.align import ARCFACE_TEMPLATE
from edge.errors import ConfigError, DatasetError
from tests.conftest import lfw_bytes

PEOPLE = [("Aaron_Peirsol", 1), ("Abdullah_Gul", 1), ("Adrien_Brody", 1), ("Al_Gore", 1),
          ("Alejandro_Toledo", 1), ("Alvaro_Uribe", 1)]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKEDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "faces"


@pytest.fixture(scope="module")
def lfw_folder(data_root, tmp_path_factory):
    """Six LFW photos in LFW layout plus a photo without a face."""
    root = tmp_path_factory.mktemp("lfw_small")
    for name, number in PEOPLE:
        (root / name).mkdir()
        (root / name / f"{name}_{number:04d}.jpg").write_bytes(lfw_bytes(data_root, name, number))
    (root / "Nobody").mkdir()
    cv2.imwrite(str(root / "Nobody" / "Nobody_0001.jpg"), np.full((200, 200, 3), 128, np.uint8))
    return root


def test_prepare_aligns_drops_faceless_and_reuses_the_cache(lfw_folder, cache, monkeypatch):
    faces = prepare_faces(lfw_folder, cache, progress=False)
    assert len(faces) == len(PEOPLE) and faces.crops.shape[1:] == (112, 112, 3)
    assert faces.manifest["no_face"] == ["Nobody/Nobody_0001.jpg"]
    assert faces.identities()[0] == "Aaron_Peirsol"
    # Landmarks are in crop space: on the ArcFace template up to the fit's residual.
    assert np.abs(faces.landmarks - ARCFACE_TEMPLATE).max() < 8
    import edge.detect

    monkeypatch.setattr(edge.detect, "create_detector", lambda *a, **k: pytest.fail("re-detected"))
    again = prepare_faces(lfw_folder, cache, progress=False)
    assert again.folder == faces.folder and again.key == faces.key


def test_image_set_errors_and_archive_keys(tmp_path, data_root):
    with pytest.raises(DatasetError, match="not found"):
        ImageSet(tmp_path / "missing.tgz")
    with pytest.raises(DatasetError, match="not a prepared face set"):
        FaceSet.load(tmp_path)  # not a prepared set
    first = next(iter(ImageSet(data_root / "lfw" / "lfw-a-gray.tgz")))
    assert first[0].count("/") == 1 and first[0].endswith(".jpg")  # top folder 'lfw/' dropped


def test_phash_finds_a_planted_lfw_copy(lfw_folder, cache):
    lfw = prepare_faces(lfw_folder, cache, progress=False)
    planted = lfw.crops[3].copy()
    planted = cv2.imdecode(cv2.imencode(".jpg", planted, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], 1)
    planted = cv2.convertScaleAbs(planted, alpha=1.1, beta=8)  # brighter, re-encoded copy
    others = np.asarray(lfw.crops[[0, 1, 2]])[:, :, ::-1]  # mirrored: not copies
    dist, index = nearest(phash(np.concatenate([others, planted[None]])), lfw.hashes)
    assert index[3] == 3 and dist[3] <= DEFAULT_THRESHOLD
    assert (dist[:3] > DEFAULT_THRESHOLD).all()
    assert hamming(lfw.hashes[:1], lfw.hashes[:1])[0, 0] == 0


def test_exclusion_drops_copies_by_phash_and_teacher_cosine(lfw_folder, cache):
    faces = prepare_faces(lfw_folder, cache, progress=False)
    rng = np.random.default_rng(0)
    templates = rng.normal(size=(len(faces), 8)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    reference = templates.copy()
    reference[1] = -reference[1]  # only row 1 differs from its reference template
    result = exclude_near_duplicates(faces, faces, None, templates, reference, cosine=0.9)
    assert result.keep.tolist() == [False, True, False, False, False, False]
    both = exclude_near_duplicates(faces, faces, 0, templates, reference, cosine=0.9)
    assert not both.keep.any() and both.counts == {"phash": 6, "teacher_cosine": 0}
    with pytest.raises(ConfigError, match="0..64"):
        exclude_near_duplicates(faces, faces, 99)


def test_lfw_folds_are_identity_disjoint(data_root, lfw_folder, cache):
    folds = lfw_person_folds(data_root / "lfw" / "pairs.txt")
    assert set(folds.values()) == set(range(1, 11)) and len(folds) > 4000
    faces = prepare_faces(lfw_folder, cache, progress=False)
    names = faces.identities()
    train_folds = tuple(sorted({folds[n] for n in names if n in folds})[:2])
    split = lfw_fold_split(faces, data_root / "lfw" / "pairs.txt", train_folds, 0.0, 0)
    assert {folds[names[i]] for i in split.train} <= set(train_folds)
    assert split.num_classes == len({names[i] for i in split.train})
    with pytest.raises(ConfigError, match="1..10"):
        lfw_fold_split(faces, data_root / "lfw" / "pairs.txt", (0, 11), 0.0, 0)
    assert len(holdout_split(np.arange(100), 0.1, 0).val) == 10


def test_dataset_is_deterministic_per_seed_epoch_row(lfw_folder, cache):
    faces = prepare_faces(lfw_folder, cache, progress=False)
    rows = np.arange(len(faces))
    data = MaskedFaceDataset(faces, rows, AugmentConfig(mask_prob=1.0, flip_prob=0.5), seed=3)
    again = MaskedFaceDataset(faces, rows, AugmentConfig(mask_prob=1.0, flip_prob=0.5), seed=3)
    first = [data.sample(i) for i in rows]
    np.testing.assert_array_equal(again.sample(2)[0], first[2][0])
    assert all(s[3] for s in first) and {s[2] for s in first} == {0, 1}  # masked; both flips
    data.set_epoch(1)
    assert any((data.sample(i)[0] != first[i][0]).any() for i in rows)
    plain = MaskedFaceDataset(faces, rows, AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0), seed=3)
    image, row, flip, masked = plain.sample(1)
    np.testing.assert_array_equal(image, faces.crops[1])
    assert (row, flip, masked) == (1, 0, False)
    item = plain[1]
    assert item["image"].shape == (3, 112, 112) and item["label"] == -1
    np.testing.assert_allclose(item["image"].numpy(), to_tensor(faces.crops[1]).numpy())


def test_flip_landmarks_swap_sides():
    flipped = flip_landmarks(ARCFACE_TEMPLATE, 112)
    assert flipped[0, 0] < flipped[1, 0]  # the subject's right eye still has the smaller x
    np.testing.assert_allclose(flipped, ARCFACE_TEMPLATE, atol=1.5)  # the template is symmetric


def test_augment_config_errors():
    with pytest.raises(ConfigError, match="mask_prob"):
        AugmentConfig(mask_prob=1.5)
    with pytest.raises(ConfigError, match="brightness"):
        AugmentConfig(brightness=1.0)


def test_epoch_sampler_walks_all_rows_and_shards_like_one_process():
    single = EpochSampler(10, 5, seed=0)
    seen = []
    for epoch in (0, 1):
        single.set_epoch(epoch)
        seen += list(single)
    assert sorted(seen) == list(range(10))
    ranks = [EpochSampler(10, 4, 0, rank, 2) for rank in (0, 1)]
    whole = EpochSampler(10, 4, 0)
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(whole)
    with pytest.raises(ConfigError, match="samples_per_epoch"):
        EpochSampler(10, 11, 0)
