"""OpenVINO backend: reads OpenVINO IR (``.xml`` + ``.bin``) and ONNX files."""

from __future__ import annotations

import numpy as np

from edge.errors import ModelFileError
from edge.runtimes.base import Runtime
from edge.telemetry import import_openvino


class OpenVinoRuntime(Runtime):
    """Runs an embedding model with OpenVINO on the CPU plugin."""

    name = "openvino"
    suffixes = (".xml", ".onnx")
    device = "CPU"

    def _open(self) -> None:
        ov = import_openvino("the openvino runtime")
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            model = core.read_model(str(self.path))
            if model.inputs[0].get_partial_shape().is_dynamic and self.card.input.batch is None:
                # Fix the spatial dims from the card; keep the batch dynamic.
                h, w = self.card.input.size
                dims = [-1, 3, h, w] if self.card.input.layout == "nchw" else [-1, h, w, 3]
                model.reshape({model.inputs[0].any_name: ov.PartialShape(dims)})
            self.compiled = core.compile_model(model, self.device, config)
        except RuntimeError as err:
            raise ModelFileError(
                f"OpenVINO cannot load {self.path} ({str(err).splitlines()[0][:200]}): the file is "
                "truncated, its .bin is missing, or it is not a model; re-export it"
            ) from None
        self.request = self.compiled.create_infer_request()

    def _infer(self, tensor: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: tensor})
        return next(iter(result.values()))
