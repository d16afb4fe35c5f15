"""Build and cache TensorRT engines from a carded ONNX file (Jetson / NVIDIA GPU).

An engine is specific to the TensorRT version and the GPU, so the cache key holds both,
with the model's sha256 and the precision:
``<cache>/tensorrt/<sha16>-<precision>-trt<version>-<gpu>.engine``.

Precisions:

- ``fp16``: FP16 kernels where faster, FP32 elsewhere, from an FP32 ONNX.
- ``int8``: from the kit's INT8 QDQ ONNX (``main.py quantize``). The ranges are already in
  the graph (explicit quantization), so TensorRT needs no calibrator.
- ``int8-calibrated``: TensorRT's own PTQ of an FP32 ONNX with an entropy calibrator over
  aligned faces; the calibration cache is written beside the engine and reused, so the
  faces are only needed once per model.

Only ``tensorrt`` and ``cuda-python`` are imported, lazily: torch is never needed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from edge.errors import ConfigError, ModelFileError, RuntimeUnavailableError

log = logging.getLogger(__name__)
PRECISIONS = ("fp16", "int8", "int8-calibrated")
MAX_BATCH = 32  # optimisation profile: batch 1..MAX_BATCH, tuned for OPT_BATCH
OPT_BATCH = 8
WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    """``(tensorrt, cudart)``, or a RuntimeUnavailableError saying how to get them."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeUnavailableError(
            "TensorRT is not installed: it needs an NVIDIA GPU or Jetson. On a Jetson use JetPack's "
            "tensorrt (python3 -m venv --system-site-packages); on a desktop GPU pip install "
            "tensorrt cuda-python") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise RuntimeUnavailableError("the TensorRT runtime needs cuda-python for GPU memory: "
                                          "pip install cuda-python") from None
    return trt, cudart


def engine_file(card: ModelCard, precision: str, trt_version: str, gpu: str, cache: Path) -> Path:
    """Where the engine for this model, precision, TensorRT version and GPU is cached."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown TensorRT precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    gpu_key = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    return Path(cache) / f"{card.sha256[:16]}-{precision}-trt{trt_version}-{gpu_key}.engine"


def precision_for(card: ModelCard, requested: str | None) -> str:
    """The engine precision: the request, else int8 for an INT8 card and fp16 otherwise."""
    if requested is None:
        return "int8" if card.precision.startswith("int8") else "fp16"
    if requested == "int8" and not card.precision.startswith("int8"):
        raise ConfigError(f"{card.name} is {card.precision}: TensorRT 'int8' needs the kit's INT8 QDQ "
                          "ONNX (main.py quantize), or use 'int8-calibrated' with calibration faces")
    return requested


def build_engine(onnx_path: Path, card: ModelCard, precision: str, out: Path,
                 calibration: np.ndarray | None = None) -> bytes:
    """Parse the ONNX, build a serialized engine for batch 1..MAX_BATCH and write it to ``out``.

    Args:
        calibration: preprocessed float32 faces in the card's layout, for ``int8-calibrated``
            when no calibration cache exists yet.

    Raises:
        ModelFileError: TensorRT cannot parse or build the model (its errors are quoted).
        ConfigError: ``int8-calibrated`` without a cache and without calibration faces.
    """
    trt, cudart = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT cannot parse {onnx_path}: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.add_optimization_profile(_profile(builder, network, card))
    config.set_flag(trt.BuilderFlag.FP16)
    if precision.startswith("int8"):
        config.set_flag(trt.BuilderFlag.INT8)
    if precision == "int8-calibrated":
        config.int8_calibrator = _calibrator(trt, cudart, out.with_suffix(".calib"), calibration)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFileError(f"TensorRT could not build an engine from {onnx_path} ({precision}); "
                             "its log above names the layer")
    data = bytes(serialized)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never half an engine in the cache
    log.info("built TensorRT %s engine %s (%.1f MB)", precision, out, len(data) / 2**20)
    return data


def _profile(builder, network, card: ModelCard):
    tensor = network.get_input(0)
    h, w = card.input.size
    item = (3, h, w) if card.input.layout == "nchw" else (h, w, 3)
    fixed = card.input.batch
    low, opt, high = (fixed, fixed, fixed) if fixed else (1, OPT_BATCH, MAX_BATCH)
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (low, *item), (opt, *item), (high, *item))
    return profile


def _calibrator(trt, cudart, cache: Path, faces: np.ndarray | None):
    if not cache.is_file() and faces is None:
        raise ConfigError("TensorRT int8-calibrated needs calibration faces the first time: pass "
                          "calibration= (aligned faces, preprocessed) or use the kit's INT8 ONNX")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the faces in batches from one device buffer; reads/writes the cache file."""

        def __init__(self) -> None:
            super().__init__()
            self.batches = [] if faces is None else [np.ascontiguousarray(faces[i:i + OPT_BATCH], np.float32)
                                                     for i in range(0, len(faces) - OPT_BATCH + 1, OPT_BATCH)]
            self.device = None
            if self.batches:
                err, self.device = cudart.cudaMalloc(self.batches[0].nbytes)
                check_cuda(err, "cudaMalloc")

        def get_batch_size(self) -> int:
            return OPT_BATCH

        def get_batch(self, names):
            if not self.batches:
                return None
            batch = self.batches.pop(0)
            check_cuda(cudart.cudaMemcpy(self.device, batch.ctypes.data, batch.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)[0], "cudaMemcpy")
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()


def check_cuda(err, what: str) -> None:
    if int(err) != 0:
        raise RuntimeUnavailableError(f"CUDA {what} failed with error {int(err)}: is the GPU visible "
                                      "(nvidia-smi) and the driver loaded?")
