"""One contract, subclassed per runtime (NNCF's template-test pattern): every backend embeds
real faces to unit vectors, handles any batch, agrees with the reference runtime on the
same FP32 model (cosine >= 0.9999) and rejects a truncated file with a clear error."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from conftest import lfw_bytes
from edge.card import card_path
from edge.errors import ConfigError, ModelCardError, ModelFileError
from edge.runtimes import load_model
from edge.zoo import resolve_model

PEOPLE = [("Aaron_Peirsol", 1), ("Abel_Pacheco", 1), ("Colin_Powell", 1), ("Serena_Williams", 1),
          ("Tony_Blair", 1)]


@pytest.fixture(scope="module")
def faces(data_root) -> np.ndarray:
    """Real LFW faces, centre-cropped to 112x112 BGR (alignment is not under test here)."""
    crops = []
    for name, number in PEOPLE:
        image = cv2.imdecode(np.frombuffer(lfw_bytes(data_root, name, number), np.uint8), cv2.IMREAD_COLOR)
        crops.append(cv2.resize(image[65:185, 65:185], (112, 112)))
    return np.stack(crops)


class RuntimeContract:
    model: str
    runtime: str | None = None
    reference: tuple[str, str | None]  # (zoo name, runtime) of the same FP32 function

    @pytest.fixture(scope="class")
    @classmethod
    def net(cls, data_root):
        return load_model(resolve_model(cls.model), runtime=cls.runtime, threads=1)

    def test_unit_norm_embeddings(self, net, faces):
        emb = net.embed(faces)
        assert emb.shape == (len(faces), net.card.embedding_size)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    def test_any_batch_size_matches_one_by_one(self, net, faces):
        together = net.embed(faces[:3])
        alone = np.concatenate([net.embed(faces[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(together, alone, atol=1e-4)

    def test_parity_with_reference(self, net, faces):
        name, runtime = self.reference
        ref = load_model(resolve_model(name), runtime=runtime).embed(faces)
        cosines = (net.embed(faces) * ref).sum(axis=1)
        assert cosines.min() >= 0.9999, cosines

    def test_different_people_differ(self, net, faces):
        emb = net.embed(faces)
        off_diagonal = (emb @ emb.T)[~np.eye(len(emb), dtype=bool)]
        assert off_diagonal.max() < 0.9

    def test_truncated_file_is_rejected(self, net, tmp_path):
        src = net.path
        for sibling in src.parent.iterdir():
            shutil.copy(sibling, tmp_path / sibling.name)
        broken = tmp_path / src.name
        target = broken.with_suffix(".bin") if broken.suffix == ".xml" else broken
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
        with pytest.raises(ModelFileError):
            load_model(broken, runtime=self.runtime, verify=False)
        if target == broken:  # the card's checksum catches it before the runtime does
            with pytest.raises(ModelFileError, match="does not match its card"):
                load_model(broken, runtime=self.runtime)


class TestOnnxRuntimeSFace(RuntimeContract):
    model, reference = "sface", ("sface-fp32", None)


class TestOpenVinoReadsOnnx(RuntimeContract):
    model, runtime, reference = "sface-fp32", "openvino", ("sface-fp32", None)


class TestOpenVinoIR(RuntimeContract):
    model, reference = "sface-openvino", ("sface-fp32", None)


class TestTflite(RuntimeContract):
    model, reference = "mobilefacenet-tflite", ("mobilefacenet-openvino", None)


class TestOpenVinoFromTflite(RuntimeContract):
    model, reference = "mobilefacenet-openvino", ("mobilefacenet-tflite", None)


def test_unknown_suffix(tmp_path):
    model = tmp_path / "model.pb"
    model.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model suffix '.pb'; supported: .onnx"):
        load_model(model)


def test_unknown_runtime(data_root):
    with pytest.raises(ConfigError, match="valid runtimes: onnxruntime, openvino, tflite"):
        load_model(resolve_model("sface"), runtime="tensorflow")


def test_unknown_zoo_name():
    with pytest.raises(ConfigError, match="one of: maskedge-student, sface, sface-fp32"):
        resolve_model("arcface-r100")


def test_missing_card(data_root, tmp_path):
    copy = tmp_path / "sface.onnx"
    shutil.copy(resolve_model("sface"), copy)
    assert not card_path(copy).exists()
    with pytest.raises(ModelCardError, match="needs its card"):
        load_model(copy)


def test_shipped_student_loads_without_a_data_root(monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.delenv("MASKEDGE_DATA_ROOT", raising=False)
    net = load_model(resolve_model("maskedge-student"))
    assert net.card.precision == "int8" and net.card.embedding_size == 192
    assert list(net.card.companions) == ["maskinv_mobilefacenet_tflite.int8-ptq.bin"]  # weights checked too
    assert net.card.threshold_at(1e-3).cosine > 0 and "UTKFace" in net.card.licence
