"""TensorRT backend (NVIDIA GPU, Jetson): an engine built from the carded ONNX, cached.

``load_model(model.onnx, runtime="tensorrt")`` builds (once) and runs an FP16 engine for an
FP32 card, or an INT8 engine for the kit's INT8 QDQ ONNX. TensorRT's own INT8 calibration of
an FP32 model is ``TensorRTRuntime(path, card, precision="int8-calibrated",
calibration=faces)``. Engines live in ``<cache>/tensorrt`` keyed by model hash, precision,
TensorRT version and GPU (see ``trt_build``). ``threads`` does not apply (GPU kernels).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.card import ModelCard
from edge.errors import ModelFileError
from edge.paths import cache_dir
from edge.runtimes.base import Runtime
from edge.runtimes.trt_build import build_engine, check_cuda, engine_file, import_tensorrt, precision_for

log = logging.getLogger(__name__)


class TensorRTRuntime(Runtime):
    """Runs an ONNX embedding model as a TensorRT engine on the first CUDA device."""

    name = "tensorrt"
    suffixes = (".onnx",)

    def __init__(self, path: Path, card: ModelCard, threads: int | None = None,
                 precision: str | None = None, calibration: np.ndarray | None = None) -> None:
        """Args beyond ``Runtime``'s:

        precision: ``fp16``, ``int8`` or ``int8-calibrated``; None: int8 for an INT8 card,
            fp16 otherwise.
        calibration: aligned BGR uint8 faces (N, H, W, 3) for ``int8-calibrated`` the first
            time (afterwards the calibration cache beside the engine is used).
        """
        self.precision, self.calibration = precision, calibration
        super().__init__(path, card, threads)

    def _open(self) -> None:
        trt, self.cudart = import_tensorrt()
        self.trt = trt
        err, props = self.cudart.cudaGetDeviceProperties(0)
        check_cuda(err, "cudaGetDeviceProperties")
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        self.engine_precision = precision_for(self.card, self.precision)
        path = engine_file(self.card, self.engine_precision, trt.__version__, gpu, cache_dir("tensorrt"))
        data = path.read_bytes() if path.is_file() else build_engine(
            self.path, self.card, self.engine_precision, path, self._calibration_tensor())
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(data)
        if self.engine is None:
            path.unlink(missing_ok=True)  # stale or foreign: rebuilt next time
            raise ModelFileError(f"TensorRT cannot load the cached engine {path} (other TensorRT or "
                                 "GPU?); it was removed and is rebuilt on the next load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)
        err, self.stream = self.cudart.cudaStreamCreate()
        check_cuda(err, "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _calibration_tensor(self) -> np.ndarray | None:
        return None if self.calibration is None else self.preprocess(self.calibration)

    def _device(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (grown, never shrunk)."""
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self.cudart.cudaFree(pointer)
            err, pointer = self.cudart.cudaMalloc(nbytes)
            check_cuda(err, "cudaMalloc")
            self._buffers[name] = (pointer, nbytes)
        return int(pointer)

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        tensor = np.ascontiguousarray(tensor, np.float32)
        self.context.set_input_shape(self.input_name, tensor.shape)
        out = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), np.float32)
        src, dst = self._device(self.input_name, tensor.nbytes), self._device(self.output_name, out.nbytes)
        self.context.set_tensor_address(self.input_name, src)
        self.context.set_tensor_address(self.output_name, dst)
        check_cuda(cudart.cudaMemcpyAsync(src, tensor.ctypes.data, tensor.nbytes, kind.cudaMemcpyHostToDevice,
                                      self.stream)[0], "cudaMemcpyAsync")
        if not self.context.execute_async_v3(self.stream):
            raise ModelFileError(f"TensorRT failed to run {self.path.name} on a batch of {len(tensor)}")
        check_cuda(cudart.cudaMemcpyAsync(out.ctypes.data, dst, out.nbytes, kind.cudaMemcpyDeviceToHost,
                                      self.stream)[0], "cudaMemcpyAsync")
        check_cuda(cudart.cudaStreamSynchronize(self.stream)[0], "cudaStreamSynchronize")
        return out

    def __del__(self) -> None:
        for pointer, _ in getattr(self, "_buffers", {}).values():
            self.cudart.cudaFree(pointer)
