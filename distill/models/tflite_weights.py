"""Read a TFLite graph's convolution weights and PReLU slopes in execution order (numpy)."""

from __future__ import annotations

import numpy as np

from edge.errors import ModelFileError


def read_layers(path: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """(weight, bias) per CONV_2D / DEPTHWISE_CONV_2D in PyTorch layout, and PReLU slopes.

    TF-slim writes PReLU as ``relu(x) + (alpha / 2) * (x - |x|)``: the constant of each MUL
    fed by a SUB is ``alpha / 2``.
    """
    from edge.runtimes.tflite import interpreter_class

    try:
        interpreter = interpreter_class()(model_path=str(path))
    except ValueError as err:
        raise ModelFileError(f"{path} is not a readable .tflite file ({err})") from None
    producer = {}
    ops = interpreter._get_ops_details()  # the only op listing the interpreter offers
    for op in ops:
        for out in op["outputs"]:
            producer[out] = op["op_name"]
    convs, slopes = [], []
    for op in ops:
        inputs = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] == "CONV_2D":
            weight = interpreter.get_tensor(inputs[1]).transpose(0, 3, 1, 2)  # OHWI -> OIHW
            convs.append((np.ascontiguousarray(weight), interpreter.get_tensor(inputs[2]).copy()))
        elif op["op_name"] == "DEPTHWISE_CONV_2D":
            weight = interpreter.get_tensor(inputs[1]).transpose(3, 0, 1, 2)  # 1HWC -> C1HW
            convs.append((np.ascontiguousarray(weight), interpreter.get_tensor(inputs[2]).copy()))
        elif op["op_name"] == "MUL" and any(producer.get(i) == "SUB" for i in inputs):
            const = next(i for i in inputs if i not in producer)
            slopes.append(2.0 * interpreter.get_tensor(const).reshape(-1).astype(np.float32))
    return convs, slopes
