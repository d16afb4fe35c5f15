"""Teachers: registry, PyTorch teacher from a checkpoint, templates cached once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.registry import UnknownNameError, create_model
from distill.teachers import (Teacher, TorchTeacher, create_teacher, list_teachers,
                              teacher_templates, template_cache_path)
from edge.errors import ConfigError


class CountingTeacher(Teacher):
    """A fixed random projection of the pixels; counts its calls."""

    name, dim, sha256 = "counting", 8, "ab" * 32

    def __init__(self) -> None:
        self.calls = 0
        self.projection = np.random.default_rng(0).normal(size=(112 * 112 * 3, self.dim)).astype(np.float32)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = crops.reshape(len(crops), -1).astype(np.float32) @ self.projection
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_registry_lists_runtime_and_torch_teachers():
    names = list_teachers()
    assert {"sface", "mobilefacenet-tflite", "iresnet50", "senet50_ffr", "file"} <= set(names)
    with pytest.raises(UnknownNameError, match="sface"):
        create_teacher("arcface_r1000")
    with pytest.raises(ConfigError, match="teacher.path"):
        create_teacher("iresnet50")


def test_templates_are_computed_once_and_keyed_by_teacher(tmp_path):
    crops = np.random.default_rng(1).integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    teacher = CountingTeacher()
    first = teacher_templates(teacher, crops, "faces-key", tmp_path, batch_size=2, progress=False)
    assert teacher.calls == 3 and first.shape == (5, 2, 8)
    np.testing.assert_allclose(first[:, 1], teacher.embed(crops[:, :, ::-1]), rtol=1e-5)
    calls = teacher.calls
    again = teacher_templates(teacher, crops, "faces-key", tmp_path, batch_size=2, progress=False)
    assert teacher.calls == calls  # reused from disk, the teacher was not asked again
    np.testing.assert_array_equal(again, first)
    other = CountingTeacher()
    other.sha256 = "cd" * 32  # another checkpoint of the same teacher: another cache file
    assert template_cache_path(other, "faces-key", tmp_path) != template_cache_path(teacher, "faces-key", tmp_path)


def test_torch_teacher_loads_a_checkpoint_frozen(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    torch.save(create_model("iresnet_tiny").state_dict(), path)
    teacher = create_teacher("iresnet_tiny", path=str(path))
    assert isinstance(teacher, TorchTeacher) and teacher.dim == 32 and len(teacher.sha256) == 64
    assert not teacher.net.training and not any(p.requires_grad for p in teacher.net.parameters())
    emb = teacher.embed(np.zeros((2, 112, 112, 3), np.uint8))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
