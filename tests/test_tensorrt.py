"""TensorRT runtime: engine cache keys and precision rules everywhere; a real FP16 engine
against onnxruntime on a CUDA GPU (skipped with the reason on CPU-only machines)."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from edge.card import ModelCard
from edge.errors import ConfigError, RuntimeUnavailableError
from edge.runtimes import backend_class, load_model
from edge.runtimes.trt_build import engine_file, precision_for
from edge.zoo import resolve_model

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _card(**changes) -> ModelCard:
    return dataclasses.replace(ModelCard.load(str(resolve_model("sface")) + ".card.json"), **changes)


def test_registered_for_onnx():
    assert backend_class("tensorrt").suffixes == (".onnx",)


def test_engine_cache_key_separates_model_precision_version_and_gpu(tmp_path):
    card = _card()
    base = engine_file(card, "fp16", "10.3.0", "NVIDIA Orin (nvgpu)", tmp_path)
    assert base.parent == tmp_path and base.name.startswith(card.sha256[:16])
    assert base.name.endswith("-fp16-trt10.3.0-nvidia-orin-nvgpu.engine")
    others = {engine_file(card, "int8-calibrated", "10.3.0", "NVIDIA Orin (nvgpu)", tmp_path),
              engine_file(card, "fp16", "10.4.0", "NVIDIA Orin (nvgpu)", tmp_path),
              engine_file(card, "fp16", "10.3.0", "NVIDIA H100", tmp_path),
              engine_file(_card(sha256="f" * 64), "fp16", "10.3.0", "NVIDIA Orin (nvgpu)", tmp_path)}
    assert base not in others and len(others) == 4
    with pytest.raises(ConfigError, match="valid: fp16, int8, int8-calibrated"):
        engine_file(card, "int4", "10.3.0", "x", tmp_path)


def test_precision_follows_the_card():
    assert precision_for(_card(precision="fp32"), None) == "fp16"
    assert precision_for(_card(precision="int8"), None) == "int8"
    assert precision_for(_card(precision="fp32"), "int8-calibrated") == "int8-calibrated"
    with pytest.raises(ConfigError, match="INT8 QDQ"):
        precision_for(_card(precision="fp32"), "int8")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the missing-package message is not reachable")
def test_missing_tensorrt_says_how_to_get_it():
    with pytest.raises(RuntimeUnavailableError, match="NVIDIA GPU or Jetson"):
        load_model(resolve_model("sface"), runtime="tensorrt")


def _cuda_ready() -> bool:
    if not HAS_TRT:
        return False
    try:
        from edge.runtimes.trt_build import import_tensorrt

        _, cudart = import_tensorrt()
        err, count = cudart.cudaGetDeviceCount()
        return int(err) == 0 and count > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.realdata
@pytest.mark.skipif(not _cuda_ready(), reason="needs TensorRT, cuda-python and a CUDA GPU (none here)")
def test_fp16_engine_matches_onnxruntime_and_is_cached(data_root, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("MASKEDGE_CACHE", str(tmp_path))
    path = resolve_model("sface-fp32")
    faces = np.random.default_rng(0).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    reference = load_model(path).embed(faces)
    engine = load_model(path, runtime="tensorrt")
    assert engine.engine_precision == "fp16"
    assert (engine.embed(faces) * reference).sum(1).min() >= 0.999
    assert (engine.embed(faces[:1]) * reference[:1]).sum() >= 0.999
    cached = list((tmp_path / "tensorrt").glob("*.engine"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    load_model(path, runtime="tensorrt")  # second load reads the cache, builds nothing
    assert cached[0].stat().st_mtime_ns == stamp
