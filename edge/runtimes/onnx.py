"""onnxruntime backend (CPU by default; CUDA when the card's user asks and it is there)."""

from __future__ import annotations

import numpy as np

from edge.errors import ModelFileError, RuntimeUnavailableError
from edge.runtimes.base import Runtime


class OnnxRuntime(Runtime):
    """Runs an ``.onnx`` embedding model with onnxruntime."""

    name = "onnxruntime"
    suffixes = (".onnx",)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def _open(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailableError(
                "onnxruntime is not installed: pip install onnxruntime (or the kit's `edge` extra)"
            ) from None
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(self.providers))
        except Exception as err:  # onnxruntime raises several private error types
            raise ModelFileError(
                f"onnxruntime cannot load {self.path} ({str(err).splitlines()[0][:200]}): the file "
                "is truncated or not an ONNX model; re-export or re-download it"
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: tensor})[0]
