"""The PyTorch twin of MobileFaceNet.tflite reproduces the real model, so masked KD can start
from the teacher's own weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import lfw_bytes
from distill.models.complexity import count_params
from distill.models.mobilefacenet_tf import load_tflite_weights
from distill.models.pretrained import write_init_checkpoint
from distill.registry import create_model
from distill.train.checkpoint import load_student
from edge.errors import ModelFileError
from edge.image import read_image
from edge.runtimes import load_model
from edge.zoo import resolve_model

PEOPLE = ("Tony_Blair", "Colin_Powell", "Serena_Williams", "Abel_Pacheco")


def _crops(root) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(read_image(lfw_bytes(root, p, 1))[65:185, 65:185], (112, 112))
                     for p in PEOPLE])


def _torch_embed(model, crops):
    x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1], np.float32))
    with torch.no_grad():
        y = model(((x - 127.5) / 127.5).permute(0, 3, 1, 2)).numpy()
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_matches_the_tflite_interpreter(data_root):
    path = data_root / "models" / "mobilefacenet-tflite" / "MobileFaceNet.tflite"
    model = load_tflite_weights(create_model("mobilefacenet_tf"), str(path)).eval()
    crops = _crops(data_root)
    reference = load_model(resolve_model("mobilefacenet-tflite")).embed(crops)
    assert (_torch_embed(model, crops) * reference).sum(1).min() >= 0.9999
    assert count_params(model) == 1_292_992


def test_init_checkpoint_loads_as_a_student(data_root, tmp_path):
    path = write_init_checkpoint(tmp_path / "init.pt")
    model, spec = load_student(path)
    assert spec["name"] == "mobilefacenet_tf" and spec["embedding_size"] == 192
    assert model(torch.zeros(1, 3, 112, 112)).shape == (1, 192)


def test_checkpoint_evaluates_like_the_tflite_model(data_root, tmp_path):
    # `main.py eval --model RUN/best.pt` goes through open_embedder's torch path.
    from benchmarks.embedders import open_embedder

    embedder = open_embedder(str(write_init_checkpoint(tmp_path / "init.pt")), threads=1)
    crops = _crops(data_root)
    ours = embedder.embed(crops)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    reference = load_model(resolve_model("mobilefacenet-tflite")).embed(crops)
    assert embedder.runtime == "torch" and embedder.name == "mobilefacenet_tf"
    assert (ours * reference).sum(1).min() >= 0.9999


def test_wrong_file_and_size(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelFileError):
        load_tflite_weights(create_model("mobilefacenet_tf"), str(bad))
    with pytest.raises(ValueError, match="192-d"):
        create_model("mobilefacenet_tf", embedding_size=128)


def test_relu_twin_loads_a_prelu_checkpoint_and_fades_to_relu():
    from distill.models.layers import set_prelu_fade

    torch.manual_seed(0)
    prelu = create_model("mobilefacenet_tf").eval()
    with torch.no_grad():  # slopes far from ReLU's 0, as in the real model (up to +-9)
        for m in prelu.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(-2.0, 2.0)
    relu = create_model("mobilefacenet_tf_relu").eval()
    relu.load_state_dict(prelu.state_dict(), strict=True)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert set_prelu_fade(relu, 1.0) == 33
        assert torch.allclose(relu(x), prelu(x), atol=1e-5)  # fade 1: the PReLU model
        set_prelu_fade(relu, 0.0)
        for m in prelu.modules():
            if isinstance(m, torch.nn.PReLU):
                m.weight.zero_()
        assert torch.allclose(relu(x), prelu(x), atol=1e-5)  # fade 0: slopes 0, i.e. ReLU
        assert not torch.allclose(relu(x), create_model("mobilefacenet_tf_relu").eval()(x))


def test_relu_twin_exports_without_prelu():
    model = create_model("mobilefacenet_tf_relu").eval()
    graph = torch.export.export(model, (torch.zeros(1, 3, 112, 112),)).graph
    ops = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert any("relu" in op for op in ops)
    assert not any("prelu" in op for op in ops)
