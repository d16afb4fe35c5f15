"""TFLite backend: ai-edge-litert (the successor) or the legacy tflite_runtime.

tflite-runtime 2.14, its last release, crashes at ``Interpreter()`` with numpy 2; a Raspberry
Pi image may still only have it, so both are tried, newest first.
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelFileError, RuntimeUnavailableError
from edge.runtimes.base import Runtime


def interpreter_class() -> type:
    """Return the first available TFLite ``Interpreter`` class."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailableError(
                "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime with numpy<2)"
            ) from None
    return Interpreter


class TfliteRuntime(Runtime):
    """Runs a ``.tflite`` embedding model with the LiteRT interpreter."""

    name = "tflite"
    suffixes = (".tflite",)

    def _open(self) -> None:
        interpreter = interpreter_class()
        try:
            self.interpreter = interpreter(model_path=str(self.path), num_threads=self.threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ModelFileError(
                f"the TFLite interpreter cannot load {self.path} ({str(err)[:200]}): the file is "
                "truncated or not a .tflite model; re-export or re-download it"
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = int(self.input["shape"][0])

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        if tensor.shape[0] != self._batch:
            # Dynamic-batch models: resize the input once per new batch size.
            self.interpreter.resize_tensor_input(self.input["index"], tensor.shape)
            self.interpreter.allocate_tensors()
            self._batch = tensor.shape[0]
        x = _quantize_input(tensor, self.input)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        return _dequantize_output(self.interpreter.get_tensor(self.output["index"]), self.output)


def _quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    # Full-integer models take int8/uint8 input: quantize with the graph's own scale.
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale
